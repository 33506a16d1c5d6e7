import type { StateInfo } from '../lib/index.ts';
import { app, onRefresh, onSelect, select } from './app.ts';
import { $, fmtBytes, short } from './dom.ts';

const NS = 'http://www.w3.org/2000/svg';
const W = 150;
const H = 52;
const GX = 34;
const GY = 14;

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

interface Placed {
  s: StateInfo;
  x: number;
  y: number;
  depth: number;
}

/**
 * A tree laid out left to right: depth is the distance from a base along
 * parent links, and each leaf gets its own row, so a long chain reads as a
 * line and a branch opens a new row below its parent.
 */
function layout(states: StateInfo[]): { placed: Placed[]; edges: [Placed, Placed][]; width: number; height: number } {
  const byKey = new Map(states.map((s) => [s.key, s]));
  const children = new Map<string, StateInfo[]>();
  const roots: StateInfo[] = [];
  for (const s of states) {
    if (s.parent && byKey.has(s.parent) && s.parent !== s.key) {
      const list = children.get(s.parent) ?? [];
      list.push(s);
      children.set(s.parent, list);
    } else roots.push(s);
  }
  const placed: Placed[] = [];
  const edges: [Placed, Placed][] = [];
  const seen = new Set<string>();
  let row = 0;
  let maxDepth = 0;
  const visit = (s: StateInfo, depth: number, parent: Placed | null) => {
    if (seen.has(s.key)) return;
    seen.add(s.key);
    const p: Placed = { s, depth, x: depth * (W + GX), y: row * (H + GY) };
    placed.push(p);
    maxDepth = Math.max(maxDepth, depth);
    if (parent) edges.push([parent, p]);
    const kids = (children.get(s.key) ?? []).sort((a, b) => a.createdAt - b.createdAt);
    if (!kids.length) row++;
    kids.forEach((k) => visit(k, depth + 1, p));
  };
  for (const r of roots.sort((a, b) => a.createdAt - b.createdAt)) visit(r, 0, null);
  return { placed, edges, width: (maxDepth + 1) * (W + GX), height: Math.max(1, row) * (H + GY) };
}

/** A tier in words: a queued state is in memory and usable, but not in IndexedDB yet (its write goes behind the call that made it). */
export function tierText(tier: StateInfo['tier']): string {
  return tier === 'queued' ? 'not yet stored' : tier;
}

/**
 * The states the graph shows: checkpoints only when asked for (a long Mamba
 * prefill keeps one every K tokens, and they would drown the states people
 * made). A shown state whose parent is hidden hangs from the nearest shown
 * ancestor instead.
 */
function visibleStates(states: StateInfo[], showCheckpoints: boolean): StateInfo[] {
  if (showCheckpoints) return states;
  const byKey = new Map(states.map((s) => [s.key, s]));
  const hidden = (k: string) => byKey.get(k)?.checkpoint === true;
  return states
    .filter((s) => !s.checkpoint)
    .map((s) => {
      let p = s.parent;
      const seen = new Set<string>();
      while (p && hidden(p) && !seen.has(p)) {
        seen.add(p);
        p = byKey.get(p)!.parent;
      }
      return p === s.parent ? s : { ...s, parent: p };
    });
}

function nodeLabel(s: StateInfo): string {
  return `state ${short(s.key)}, ${s.checkpoint ? 'checkpoint' : s.parent ? 'delta' : 'base'}${s.label ? ` "${s.label}"` : ''}, ${s.tokens} tokens, ${fmtBytes(s.bytes)}, codec ${s.codec}, tier ${tierText(s.tier)}, reused ${s.hits} ${s.hits === 1 ? 'time' : 'times'}${s.pinned ? ', pinned' : ''}`;
}

function draw(all: StateInfo[]): void {
  const root = $('graph');
  const empty = $('graphEmpty');
  const box = $<HTMLInputElement>('showCheckpoints');
  $('checkpointCount').textContent = String(all.filter((s) => s.checkpoint).length);
  const states = visibleStates(all, box.checked);
  empty.hidden = states.length > 0;
  const { placed, edges, width, height } = layout(states);
  const pad = 6;
  const s = svg('svg', { width: width + pad * 2, height: height + pad * 2, role: 'group', 'aria-label': `State graph: ${states.length} states` });
  const g = svg('g', { transform: `translate(${pad},${pad})` });
  s.append(g);
  for (const [a, b] of edges) {
    const x1 = a.x + W;
    const y1 = a.y + H / 2;
    const x2 = b.x;
    const y2 = b.y + H / 2;
    g.append(svg('path', { d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}`, class: 'edge' }));
  }
  for (const p of placed) {
    const st = p.s;
    const node = svg('g', {
      class: `node ${st.tier}${st.parent ? '' : ' base'}${st.checkpoint ? ' checkpoint' : ''}${st.pinned ? ' pinned' : ''}${st.key === app.selected ? ' selected' : ''}`,
      transform: `translate(${p.x},${p.y})`,
      tabindex: 0,
      role: 'button',
      'data-key': st.key,
      'data-testid': 'state-node',
      'data-hits': st.hits,
      'aria-pressed': String(st.key === app.selected),
      'aria-label': nodeLabel(st),
    });
    node.append(svg('title', {}, `${st.key}\n${nodeLabel(st)}`));
    node.append(svg('rect', { width: W, height: H, rx: 6 }));
    const head = `${st.checkpoint ? 'CK ' : st.parent ? '' : 'BASE '}${short(st.key)}${st.pinned ? ' 📌' : ''}`;
    node.append(svg('text', { x: 8, y: 15, class: 'k' }, head));
    node.append(svg('text', { x: 8, y: 30 }, `${st.tokens} tok · ${fmtBytes(st.bytes)}`));
    const meta = `${st.hits ? `${st.hits} hit${st.hits > 1 ? 's' : ''} · ` : ''}${st.codec} · ${tierText(st.tier)}${st.label ? ` · ${st.label}` : ''}`;
    node.append(svg('text', { x: 8, y: 44, class: 'm' }, meta.length > 24 ? `${meta.slice(0, 23)}…` : meta));
    const choose = () => select(st.key);
    node.addEventListener('click', choose);
    node.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        choose();
      }
    });
    g.append(node);
  }
  root.replaceChildren(s);
}

export function initGraph(): void {
  onRefresh(({ states }) => draw(states));
  $<HTMLInputElement>('showCheckpoints').addEventListener('change', () => {
    if (app.last) draw(app.last.states);
  });
  onSelect(() => {
    // Redrawing replaces the nodes; keep keyboard focus on the chosen one.
    const hadFocus = $('graph').contains(document.activeElement);
    if (app.last) draw(app.last.states);
    const n = document.querySelector<SVGGElement>(`#graph .node[data-key="${CSS.escape(app.selected ?? '')}"]`);
    n?.scrollIntoView?.({ block: 'nearest', inline: 'nearest' });
    if (hadFocus) n?.focus({ preventScroll: true });
  });
}
