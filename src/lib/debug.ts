/** Where a client keeps its worker supervisor for the testing entry (src/lib/testing.ts). */
export const DEBUG = Symbol.for('statecart.debug');
