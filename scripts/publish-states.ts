/**
 * `npm run publish-states -- --out <dir> [inputs]`: writes the layout of a
 * remote state host (src/formats/remote-layout.ts) that any static host can
 * serve, plus the catalog.json the page reads:
 *
 *   <out>/<model_fp>/index.json
 *   <out>/<model_fp>/<key-hex>.safetensors
 *   <catalog>                                  (default <out>/catalog.json)
 *
 * Inputs, any mix:
 *   <file.safetensors> …                 cartridges exported from a browser (the page's Download, exportCartridge)
 *   --model <id> --label <l> --text <t>  states computed here (Node, onnxruntime-node), from a text …
 *   --model <id> --text-file <f>         … or a file
 *   --samples                            the page's example bases (system prompt, long document) for tiny-gpt2 and tiny-mamba
 *
 * Every input goes through this script's own store: cartridges through the
 * strict importer (a file that fails any check stops the run and nothing of
 * it is published), texts through the engine. Each state of that store is
 * then written whole: the input's own bytes for a whole cartridge, an export
 * in `--codec` (default fp32) for a delta cartridge or a computed state. An
 * existing index in <out> is merged with, so publishing adds states.
 *
 * Options: --catalog <file> (relative URLs are made from its folder),
 * --codec fp32|fp16|int8|kivi4, --models-dir <dir> (default public/models).
 */
import 'fake-indexeddb/auto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { AutoTokenizer, env } from '@huggingface/transformers';
import { LocalStatecart, type ModelHost } from '../src/engine/statecart.ts';
import { StateStore } from '../src/store/store.ts';
import { loadGpt2 } from '../src/models/gpt2.ts';
import { createMambaModel, type OrtLike } from '../src/models/mamba.ts';
import type { StateModel } from '../src/models/types.ts';
import { isCodecName, type CodecName } from '../src/formats/codecs.ts';
import {
  CATALOG_FORMAT,
  cartridgePath,
  describeCartridge,
  indexPath,
  makeRemoteIndex,
  REMOTE_INDEX_FORMAT,
  type Catalog,
  type CatalogEntry,
  type RemoteIndex,
  type RemoteIndexEntry,
} from '../src/formats/remote-layout.ts';
import { EXAMPLES, SAMPLE_BASES } from '../src/ui/examples.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export interface TextInput {
  model: string;
  text: string;
  label?: string;
}

export interface PublishOptions {
  out: string;
  catalog?: string;
  cartridges?: string[];
  texts?: TextInput[];
  codec?: CodecName;
  modelsDir?: string;
  log?: (s: string) => void;
}

export interface Published {
  modelId: string;
  modelFp: string;
  key: string;
  tokens: number;
  bytes: number;
  codec: string;
  label?: string;
  path: string;
}

/** The example bases the built site ships (scripts/publish-states.ts --samples). */
export function sampleTexts(): TextInput[] {
  const out: TextInput[] = [];
  for (const model of ['tiny-gpt2', 'tiny-mamba']) for (const name of SAMPLE_BASES) out.push({ model, text: EXAMPLES[name]!, label: name });
  return out;
}

/** Models of a local folder, loaded with onnxruntime-node: GPT-2 through transformers.js, Mamba directly. */
function nodeHost(modelsDir: string): ModelHost {
  const cache = new Map<string, Promise<StateModel>>();
  env.allowLocalModels = true;
  env.allowRemoteModels = false;
  env.localModelPath = modelsDir + sep;
  const load = async (id: string): Promise<StateModel> => {
    const dir = join(modelsDir, id);
    if (!existsSync(join(dir, 'statecart.json'))) throw new Error(`model ${id} is not in ${modelsDir} (run \`npm run models\`)`);
    const meta = JSON.parse(readFileSync(join(dir, 'statecart.json'), 'utf8')) as { arch: string };
    if (meta.arch === 'mamba') {
      const tok = await AutoTokenizer.from_pretrained(id);
      return createMambaModel({
        ort: ort as unknown as OrtLike,
        baseUrl: dir,
        modelId: id,
        device: 'cpu',
        deviceReason: 'publish-states (Node)',
        fetchBytes: async (f) => new Uint8Array(await readFile(f)),
        tokenizer: {
          encode: (t: string) => Array.from((tok as unknown as { encode: (t: string) => number[] }).encode(t)),
          decode: (ids: number[]) => (tok as unknown as { decode: (t: number[], o?: object) => string }).decode(ids, { skip_special_tokens: false }),
        },
      });
    }
    return loadGpt2({ modelId: id, device: 'cpu', deviceReason: 'publish-states (Node)', readFile: async (f) => new Uint8Array(await readFile(join(dir, f))) });
  };
  return {
    load: (req) => {
      let p = cache.get(req.model);
      if (!p) {
        p = load(req.model);
        cache.set(req.model, p);
      }
      return p;
    },
    environment: () => ({ crossOriginIsolated: false, threads: 1 }),
  };
}

const json = (o: unknown) => JSON.stringify(o, null, 1) + '\n';
/** A relative URL from one folder to a path (forward slashes, for the web). */
const urlFrom = (fromDir: string, to: string) => relative(fromDir, to).split(sep).join('/');

export async function publishStates(o: PublishOptions): Promise<Published[]> {
  const log = o.log ?? (() => undefined);
  const out = resolve(o.out);
  const catalogPath = resolve(o.catalog ?? join(out, 'catalog.json'));
  const codec = o.codec ?? 'fp32';
  const host = nodeHost(resolve(o.modelsDir ?? join(ROOT, 'public/models')));
  const store = new StateStore({ dbName: `publish-states-${process.pid}-${Date.now()}` });
  const sc = new LocalStatecart(store, host);
  const published: Published[] = [];
  const write = (modelId: string, bytes: Uint8Array, label?: string) => {
    const f = describeCartridge(bytes);
    const path = join(out, cartridgePath(f.modelFp, f.key));
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, bytes);
    published.push({ modelId, modelFp: f.modelFp, key: f.key, tokens: f.tokens, bytes: bytes.byteLength, codec: f.codec, ...(label ? { label } : {}), path });
  };
  try {
    for (const file of o.cartridges ?? []) {
      const bytes = new Uint8Array(readFileSync(file));
      const f = describeCartridge(bytes);
      await sc.loadModel({ model: f.modelId });
      // The strict importer: a file that fails any check stops the run here.
      const r = await sc.importCartridge({ source: bytes });
      const label = basename(file).replace(/\.safetensors$/, '');
      // A delta holds only what follows its parent: published whole.
      if (f.parent) write(f.modelId, new Uint8Array(await (await sc.exportCartridge({ stateKey: r.stateKey, codec })).arrayBuffer()), label);
      else write(f.modelId, bytes, label);
      log(`${file}: ${r.tokens} tokens of ${f.modelId}${f.parent ? ' (a delta, published whole)' : ''}`);
    }
    for (const t of o.texts ?? []) {
      await sc.loadModel({ model: t.model });
      const s = await sc.createState({ text: t.text, ...(t.label ? { label: t.label } : {}) });
      write(t.model, new Uint8Array(await (await sc.exportCartridge({ stateKey: s.stateKey, codec })).arrayBuffer()), t.label);
      log(`${t.label ?? 'text'} on ${t.model}: ${s.tokens} tokens, prefilled in ${s.timings.prefillMs.toFixed(0)} ms`);
    }
  } finally {
    store.close();
  }
  // One index per model, merged with what <out> already holds.
  const byFp = new Map<string, Published[]>();
  for (const p of published) byFp.set(p.modelFp, [...(byFp.get(p.modelFp) ?? []), p]);
  for (const [fp, list] of byFp) {
    const file = join(out, indexPath(fp));
    const old = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as RemoteIndex) : null;
    const kept = old?.format === REMOTE_INDEX_FORMAT && old.model_fp === fp ? old.states : [];
    const fresh: RemoteIndexEntry[] = list.map((p) => ({
      key: p.key,
      tokens: p.tokens,
      bytes: p.bytes,
      codec: p.codec,
      ...(p.label ? { label: p.label } : {}),
    }));
    const freshKeys = new Set(fresh.map((e) => e.key));
    writeFileSync(file, json(makeRemoteIndex(fp, list[0]!.modelId, [...kept.filter((e) => !freshKeys.has(e.key)), ...fresh])));
  }
  writeCatalog(out, catalogPath);
  return published;
}

/** catalog.json for every state of every index under <out>, with URLs relative to the catalog. */
function writeCatalog(out: string, catalogPath: string): void {
  const dir = dirname(catalogPath);
  const cartridges: CatalogEntry[] = [];
  for (const fp of existsSync(out) ? readdirSync(out).sort() : []) {
    const file = join(out, fp, 'index.json');
    if (!existsSync(file)) continue;
    const idx = JSON.parse(readFileSync(file, 'utf8')) as RemoteIndex;
    if (idx.format !== REMOTE_INDEX_FORMAT) continue;
    for (const e of idx.states) {
      cartridges.push({
        name: e.label ?? `${e.tokens}-token state`,
        description: `${e.tokens} tokens, ${e.codec}; also served as a remote state host`,
        model: idx.model_id,
        size: e.bytes,
        url: urlFrom(dir, join(out, cartridgePath(fp, e.key))),
        key: e.key,
        tokens: e.tokens,
      });
    }
  }
  const catalog: Catalog = { format: CATALOG_FORMAT, remote: (urlFrom(dir, out) || '.') + '/', cartridges };
  mkdirSync(dir, { recursive: true });
  writeFileSync(catalogPath, json(catalog));
}

function parseArgs(argv: string[]): PublishOptions {
  const o: PublishOptions & { texts: TextInput[]; cartridges: string[] } = { out: '', texts: [], cartridges: [] };
  let model = 'tiny-gpt2';
  let label: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    if (k === '--out') o.out = v();
    else if (k === '--catalog') o.catalog = v();
    else if (k === '--models-dir') o.modelsDir = v();
    else if (k === '--codec') {
      const c = v();
      if (!isCodecName(c)) throw new Error(`--codec: one of fp32, fp16, int8, kivi4 (got ${c})`);
      o.codec = c;
    } else if (k === '--model') model = v();
    else if (k === '--label') label = v();
    else if (k === '--text' || k === '--text-file') {
      const text = k === '--text' ? v() : readFileSync(v(), 'utf8');
      o.texts.push({ model, text, ...(label ? { label } : {}) });
      label = undefined;
    } else if (k === '--samples') o.texts.push(...sampleTexts());
    else if (k === '--help' || k === '-h') {
      console.log(
        readFileSync(fileURLToPath(import.meta.url), 'utf8')
          .split('*/')[0]!
          .replace(/^\/\*\*|^ \* ?/gm, ''),
      );
      process.exit(0);
    } else if (k.startsWith('-')) throw new Error(`unknown option ${k} (see --help)`);
    else o.cartridges.push(k);
  }
  if (!o.out) throw new Error('give --out <dir> (see --help)');
  if (!o.texts.length && !o.cartridges.length) throw new Error('nothing to publish: give cartridge files, --text, --text-file or --samples (see --help)');
  return o;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  const list = await publishStates({ ...o, log: (s) => console.log(`[publish-states] ${s}`) });
  for (const p of list) console.log(`[publish-states] ${relative(process.cwd(), p.path)}  ${p.modelId}  ${p.tokens} tokens  ${p.bytes} bytes  ${p.codec}`);
  console.log(
    `[publish-states] ${list.length} states in ${relative(process.cwd(), resolve(o.out)) || '.'} (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
  );
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`[publish-states] ${e instanceof Error ? `${e.name}: ${e.message}` : e}`);
    process.exit(1);
  });
}
