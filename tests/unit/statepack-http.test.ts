// State Pack v0.2's HTTP routes (src/lib/statepack-http.ts) answered by the in-thread engine:
// the seed's field names, statecart's receipts, the same keys the library gives, typed error statuses.
import { describe, expect, it } from 'vitest';
import { statePackRoute } from '../../src/lib/statepack-http.ts';
import { localStatecart } from './support/node-engine.ts';

const BASE = 'You are a legal research agent. Read each clause and say which obligations it creates.';
const STEPS = [' Step 1: clause 4 affects indemnity.', ' Step 2: clause 9 limits liability.'];

async function engine() {
  const sc = await localStatecart();
  await sc.loadModel({ model: 'tiny-gpt2' });
  const http = async (method: string, path: string, body?: unknown) => {
    const r = await statePackRoute(sc, { method, path, body: body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body) });
    return r as { status: number; body: Record<string, unknown> & { savings?: Record<string, number> } };
  };
  return { sc, http };
}

describe('State Pack HTTP routes over the engine', () => {
  it('create → infer → infer → compact → health: the seed’s fields, receipts, and the library’s keys', async () => {
    const { sc, http } = await engine();
    const c = await http('POST', 'states', { base_text: BASE });
    expect(c.status).toBe(200);
    expect(c.body).toMatchObject({ state_hash: expect.stringMatching(/^sha256:[0-9a-f]{64}$/), tokens: expect.any(Number), bytes: expect.any(Number) });
    expect(c.body.receipt_hash).toMatch(/^sha256:/);
    expect((c.body.receipt as { op: string }).op).toBe('create');
    const i1 = await http('POST', 'infer', { state_hash: c.body.state_hash, delta_text: STEPS[0], max_new_tokens: 4 });
    expect(i1.status).toBe(200);
    expect(Object.keys(i1.body)).toEqual(expect.arrayContaining(['new_state_hash', 'output', 'savings', 'receipt', 'receipt_hash']));
    expect(i1.body.savings).toMatchObject({ tokens_reused: c.body.tokens });
    const i2 = await http('POST', 'infer', { state_hash: i1.body.new_state_hash, delta_text: STEPS[1], max_new_tokens: 4 });
    const k = await http('POST', 'compact', { state_hash: i2.body.new_state_hash, keep: { first_tokens: 8, last_tokens: 16 } });
    expect(k.status).toBe(200);
    expect(k.body).toMatchObject({ steps_folded: 3, tokens: 24 });
    const g = await http('GET', `states/${encodeURIComponent(k.body.new_state_hash as string)}`);
    expect(g.body).toMatchObject({ state_hash: k.body.new_state_hash, tokens: 24, hot: true });
    const h = await http('GET', 'health');
    expect(h.body).toMatchObject({ states_hot: expect.any(Number), states_cached: 4, model: 'tiny-gpt2' });

    // The same calls through the library, on a fresh store: the same keys.
    const lib = await localStatecart();
    await lib.loadModel({ model: 'tiny-gpt2' });
    const lc = await lib.createState({ text: BASE });
    const l1 = await lib.infer({ stateKey: lc.stateKey, delta: STEPS[0], maxNewTokens: 4 });
    const l2 = await lib.infer({ stateKey: l1.newStateKey, delta: STEPS[1], maxNewTokens: 4 });
    const lk = await lib.compact({ stateKey: l2.newStateKey, keep: { firstTokens: 8, lastTokens: 16 } });
    expect([c.body.state_hash, i1.body.new_state_hash, i2.body.new_state_hash, k.body.new_state_hash]).toEqual([
      lc.stateKey,
      l1.newStateKey,
      l2.newStateKey,
      lk.newStateKey,
    ]);
    expect(i1.body.output).toBe(l1.output);
    expect(i1.body.receipt_hash).toBe(l1.receipt.hash);
    sc.store.close();
    lib.store.close();
  });

  it('the seed’s compact: accumulated deltas folded onto the base into one fresh state, the steps released', async () => {
    const { sc, http } = await engine();
    const c = await http('POST', 'states', { base_text: BASE });
    const k = await http('POST', 'compact', { state_hash: c.body.state_hash, accumulated_deltas: STEPS });
    expect(k.status).toBe(200);
    expect(k.body.steps_folded).toBe(2);
    // The same tokens as the base followed by the two deltas (each tokenized as infer does).
    const ids = [...(await sc.tokenize({ text: BASE })), ...(await sc.tokenize({ text: STEPS[0]! })), ...(await sc.tokenize({ text: STEPS[1]! }))];
    const want = await sc.createState({ tokens: ids });
    expect(k.body.new_state_hash).toBe(want.stateKey);
    const keys = (await sc.listStates()).map((s) => s.key);
    expect(keys.sort()).toEqual([c.body.state_hash, k.body.new_state_hash].sort());
    sc.store.close();
  });

  it('errors are statuses with { error, message }: bad JSON 400, unknown hash 404, overflow 409 naming compact, unknown route 404, wrong method 405', async () => {
    const { sc, http } = await engine();
    const badJson = await http('POST', 'states', '{"base_text": ');
    expect(badJson).toMatchObject({ status: 400, body: { error: 'InvalidInput' } });
    expect(badJson.body.message).toMatch(/not JSON/);
    expect(await http('POST', 'states', {})).toMatchObject({ status: 400, body: { error: 'InvalidInput' } });
    expect(await http('POST', 'infer', { state_hash: 'abc' })).toMatchObject({ status: 400, body: { error: 'InvalidInput' } });
    const unknown = `sha256:${'ab'.repeat(32)}`;
    expect(await http('GET', `states/${unknown}`)).toMatchObject({ status: 404, body: { error: 'StateNotFound' } });
    expect(await http('POST', 'infer', { state_hash: unknown, delta_text: 'x' })).toMatchObject({ status: 404, body: { error: 'StateNotFound' } });
    const c = await http('POST', 'states', { base_text: BASE });
    const over = await http('POST', 'infer', { state_hash: c.body.state_hash, delta_text: ' more', max_new_tokens: 2000 });
    expect(over).toMatchObject({ status: 409, body: { error: 'ContextOverflow' } });
    expect(over.body.message).toMatch(/compact/);
    expect(await http('POST', 'nothing', {})).toMatchObject({ status: 404, body: { error: 'NotFound' } });
    expect(await http('GET', 'infer')).toMatchObject({ status: 405, body: { error: 'MethodNotAllowed' } });
    expect(await http('POST', 'health', {})).toMatchObject({ status: 405 });
    sc.store.close();
  });

  it('merge: the chain folded into its last state (the same key the library gives), intermediates released; a merge of an unknown hash is 404', async () => {
    const { sc, http } = await engine();
    const c = await http('POST', 'states', { base_text: BASE });
    const i1 = await http('POST', 'infer', { state_hash: c.body.state_hash, delta_text: STEPS[0], max_new_tokens: 4 });
    const i2 = await http('POST', 'infer', { state_hash: i1.body.new_state_hash, delta_text: STEPS[1], max_new_tokens: 4 });
    const m = await http('POST', 'merge', { state_hashes: [c.body.state_hash, i1.body.new_state_hash, i2.body.new_state_hash] });
    expect(m.status).toBe(200);
    expect(m.body).toMatchObject({ new_state_hash: i2.body.new_state_hash, tokens: expect.any(Number), bytes: expect.any(Number) });
    expect(m.body.released).toContain(i1.body.new_state_hash);
    expect((m.body.receipt as { op: string }).op).toBe('merge');
    const lib = await localStatecart();
    await lib.loadModel({ model: 'tiny-gpt2' });
    const lc = await lib.createState({ text: BASE });
    const l1 = await lib.infer({ stateKey: lc.stateKey, delta: STEPS[0], maxNewTokens: 4 });
    const l2 = await lib.infer({ stateKey: l1.newStateKey, delta: STEPS[1], maxNewTokens: 4 });
    const lm = await lib.merge({ stateKeys: [lc.stateKey, l1.newStateKey, l2.newStateKey] });
    expect(m.body.new_state_hash).toBe(lm.newStateKey);
    expect(m.body.tokens).toBe(lm.tokens);
    expect(m.body.released).toEqual(lm.released);
    expect(await http('POST', 'merge', { state_hashes: [c.body.state_hash, `sha256:${'ef'.repeat(32)}`] })).toMatchObject({
      status: 404,
      body: { error: 'StateNotFound' },
    });
    expect(await http('POST', 'merge', { state_hashes: [] })).toMatchObject({ status: 400, body: { error: 'InvalidInput' } });
    sc.store.close();
    lib.store.close();
  });

  it('a store with no room for the state: 507 QuotaExceeded, and nothing is written', async () => {
    const { sc, http } = await engine();
    await sc.setBudget({ bytes: 1024 });
    const r = await http('POST', 'states', { base_text: BASE });
    expect(r).toMatchObject({ status: 507, body: { error: 'QuotaExceeded', message: expect.any(String) } });
    expect(await sc.listStates()).toEqual([]);
    sc.store.close();
  });
});
