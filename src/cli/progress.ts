// A progress bar on stderr for long runs (cli-progress), quiet when stderr is not a terminal
// except for an occasional line, so logs stay readable.
import cliProgress from 'cli-progress';

export class ProgressBar {
  private bar: cliProgress.SingleBar | null = null;
  private lastLine = 0;
  private readonly label: string;

  constructor(label: string) {
    this.label = label;
  }

  update(done: number, total: number): void {
    if (process.stderr.isTTY) {
      if (!this.bar) {
        this.bar = new cliProgress.SingleBar({
          format: `${this.label} [{bar}] {percentage}% | {value}/{total} tokens | {eta_formatted} left`,
          stream: process.stderr, hideCursor: true, clearOnComplete: true,
        }, cliProgress.Presets.shades_classic);
        this.bar.start(total, done);
      }
      this.bar.update(done);
    } else if (performance.now() - this.lastLine > 10_000 || done === total) {
      this.lastLine = performance.now();
      process.stderr.write(`${this.label}: ${done}/${total} tokens\n`);
    }
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
