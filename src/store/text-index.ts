import { promisifyRequest } from 'idb-keyval';
import type { StoreCore } from './context.ts';
import { getManifest, MANIFESTS, stateKeyOf, type Manifest } from './records.ts';

/** The token ids of one stored state, and whose they are. */
export interface StoredText {
  key: string;
  modelId: string;
  modelFp: string;
  tokens: Uint32Array;
}

/**
 * The token ids of every stored state, kept in memory so that explaining a
 * partial hit ("the text differs at token N from state X") does not read
 * every manifest on every request. Manifests this store reads or writes are
 * noted as they pass; a call lists the manifest keys (keys only, cheap),
 * drops the ones gone and reads only the ones never seen (another tab's).
 * A key names its tokens, so an entry never goes stale while its key exists.
 */
export class TextIndex {
  private readonly byKey = new Map<string, StoredText>();

  /** A manifest read: kept unless its key is known. */
  note(m: Manifest | undefined): void {
    if (m && !this.byKey.has(m.key)) this.set(m);
  }

  /** A manifest written (perhaps over an edited one under the same key). */
  set(m: Manifest): void {
    this.byKey.set(m.key, { key: m.key, modelId: m.modelId, modelFp: m.modelFp, tokens: Uint32Array.from(m.tokens) });
  }

  forget(key: string): void {
    this.byKey.delete(key);
  }

  async all(core: StoreCore): Promise<StoredText[]> {
    const fresh = await core.kv('readonly', async (s) => {
      const keys = ((await promisifyRequest(s.getAllKeys(MANIFESTS()))) as IDBValidKey[]).map(stateKeyOf);
      const unseen = keys.filter((k) => !this.byKey.has(k));
      return { keys, read: await Promise.all(unseen.map((k) => getManifest(s, k))) };
    });
    const present = new Set(fresh.keys);
    for (const k of this.byKey.keys()) if (!present.has(k)) this.byKey.delete(k);
    for (const m of fresh.read) this.note(m);
    return [...this.byKey.values()];
  }
}
