/**
 * The one file that knows the charting library (Chart.js): the panels speak
 * only this small interface, so swapping in another library touches nothing else.
 */
import { Chart, BarController, LineController, BarElement, LineElement, PointElement, CategoryScale, LinearScale, Legend, Tooltip, Title } from 'chart.js';

Chart.register(BarController, LineController, BarElement, LineElement, PointElement, CategoryScale, LinearScale, Legend, Tooltip, Title);

export interface Series {
  label: string;
  color: string;
  values: (number | null)[];
  /** Drawn dashed, so that a series lying on another one still shows. */
  dashed?: boolean;
}

export interface ChartSpec {
  kind: 'bar' | 'line';
  title: string;
  yLabel: string;
  /** Formats a y value for the axis and the tooltip. */
  format?: (v: number) => string;
}

export interface SavingsChart {
  update(labels: string[], series: Series[]): void;
  destroy(): void;
}

export function makeChart(canvas: HTMLCanvasElement, spec: ChartSpec): SavingsChart {
  const fmt = spec.format ?? ((v: number) => String(v));
  const chart = new Chart<'bar' | 'line', (number | null)[], string>(canvas, {
    type: spec.kind,
    data: { labels: [], datasets: [] },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      // Charts refill after every step; animating each refill only costs main-thread time.
      animation: false,
      plugins: {
        title: { display: true, text: spec.title, font: { size: 13 } },
        legend: { position: 'bottom', labels: { boxWidth: 12 } },
        tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${fmt(Number(c.parsed.y))}` } },
      },
      scales: {
        x: { title: { display: true, text: 'chain step' } },
        y: { beginAtZero: true, title: { display: true, text: spec.yLabel }, ticks: { callback: (v) => fmt(Number(v)) } },
      },
    },
  });
  return {
    update(labels, series) {
      chart.data.labels = labels;
      chart.data.datasets = series.map((s) => ({
        label: s.label,
        data: s.values,
        backgroundColor: s.color,
        borderColor: s.color,
        borderWidth: spec.kind === 'line' ? 2 : 0,
        pointRadius: 3,
        ...(s.dashed ? { borderDash: [6, 4] } : {}),
      }));
      chart.update();
      canvas.setAttribute(
        'aria-label',
        `${spec.title}: ${series.map((s) => `${s.label} ${s.values.map((v) => (v === null ? '—' : fmt(v))).join(', ')}`).join('; ')}`,
      );
    },
    destroy: () => chart.destroy(),
  };
}
