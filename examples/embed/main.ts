import { createStatecart } from 'statecart';

// The worker, the runtime and the store come with the package; the model's files are served from /models/.
const sc = await createStatecart({ model: 'tiny-gpt2', modelsBase: '/models/' });
const base = await sc.createState({ text: 'You are a careful assistant. Answer in one short sentence.' });
const r = await sc.infer({ stateKey: base.stateKey, delta: '\nQ: What is a cache?\nA:', maxNewTokens: 12 });
document.querySelector('#base')!.textContent = `${base.tokens} tokens, ${base.reused} of them reused from the store`;
document.querySelector('#out')!.textContent = r.output;
Object.assign(window, { statecart: sc, result: { base, r } });
