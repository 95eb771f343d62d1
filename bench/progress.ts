// Progress lines on stderr, stamped with the time since the run started.

const started = performance.now();

export function elapsedSeconds(): number {
  return (performance.now() - started) / 1000;
}

export function formatDuration(seconds: number): string {
  const m = Math.floor(seconds / 60);
  const s = seconds - 60 * m;
  return m > 0 ? `${m} min ${s.toFixed(0).padStart(2, '0')} s` : `${s.toFixed(1)} s`;
}

export function progress(message: string): void {
  const t = elapsedSeconds();
  const m = Math.floor(t / 60);
  process.stderr.write(`[${m}:${(t - 60 * m).toFixed(0).padStart(2, '0')}] ${message}\n`);
}
