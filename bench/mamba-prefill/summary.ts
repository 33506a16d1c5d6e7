/** One event of onnxruntime's profiler (the Chrome trace format it writes). */
export interface ProfileEvent {
  cat: string;
  name: string;
  dur: number;
  args?: { op_name?: string; output_type_shape?: unknown };
}

/** Per-node kernel times summed by op type and by op and output shape (the same node of every layer), biggest first. */
export function summariseProfile(ev: ProfileEvent[], log: (s: string) => void, top = 30): void {
  const nodes = ev.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
  if (nodes.length === 0) {
    log('  no node events');
    return;
  }
  const runs = ev.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  const total = nodes.reduce((a, e) => a + e.dur, 0);
  const runTotal = runs.reduce((a, e) => a + e.dur, 0);
  log(`  ${runs.length} runs, ${(runTotal / 1000).toFixed(0)} ms in runs, ${(total / 1000).toFixed(0)} ms in kernels`);
  const table = (title: string, key: (e: ProfileEvent) => string, n: number): void => {
    const m = new Map<string, number>();
    for (const e of nodes) m.set(key(e), (m.get(key(e)) ?? 0) + e.dur);
    log(`  ${title}:`);
    for (const [k, d] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) {
      log(`    ${(d / 1000).toFixed(1).padStart(9)} ms  ${((100 * d) / total).toFixed(1).padStart(5)}%  ${k.slice(0, 100)}`);
    }
  };
  table('by op type', (e) => e.args?.op_name ?? '?', 16);
  table('by op and output shape', (e) => `${e.args?.op_name ?? '?'} ${JSON.stringify(e.args?.output_type_shape ?? '')}`, top);
}
