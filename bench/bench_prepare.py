"""
Tokenization speed of prepare.py, end to end (read, tokenize, write the bins, checksum, meta.json).

    python bench/bench_prepare.py                # the bundled sample's train split repeated 10x (~40 MB)
    python bench/bench_prepare.py --repeat 3 --runs 1 --num_threads 2

Builds the source folder in a temporary directory (never inside the repo) and times prepare.prepare(),
which is what `python prepare.py --variant full --source DIR --force` runs. For reference, each run
also times raw tiktoken encode_ordinary_batch on the same stories, no bins written. The runs are
interleaved so that load from other processes hits both figures alike.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import prepare  # noqa: E402
from tokenizer import gpt2_encoding  # noqa: E402

parser = argparse.ArgumentParser(description="Tokenization speed of prepare.py")
parser.add_argument('--text', default=None,
                    help="a .txt source file (stories separated by <|endoftext|>); default: the bundled sample's train split")
parser.add_argument('--repeat', type=int, default=10, help="copies of the text in the benchmark's train file")
parser.add_argument('--runs', type=int, default=5, help="report the median and best of this many runs")
parser.add_argument('--num_threads', type=int, default=None, help="as prepare.py (default: all CPUs)")
args = parser.parse_args()
if args.text is not None and not os.path.isfile(args.text):
    sys.exit(f"bench_prepare.py: error: {args.text} not found (expected a .txt file of stories)")

num_threads = args.num_threads or os.cpu_count()
load_before = os.getloadavg()[0]
enc = gpt2_encoding()  # built once, outside the timings (~0.3 s)
end_to_end, raw, cpu = [], [], []
with tempfile.TemporaryDirectory() as tmp:
    source = Path(tmp) / 'source'
    source.mkdir()
    if args.text is None:
        import gzip
        text = gzip.decompress((prepare.SAMPLE_DIR / prepare.SAMPLE_FILES['train']).read_bytes()).decode('utf-8').strip()
    else:
        text = Path(args.text).read_text(encoding='utf-8').strip()
    (source / 'train.txt').write_text('\n<|endoftext|>\n'.join([text] * args.repeat) + '\n', encoding='utf-8')
    (source / 'validation.txt').write_text(text + '\n', encoding='utf-8')
    mb = (source / 'train.txt').stat().st_size / 1e6
    print(f"source: {args.text or 'data_sample train'} x{args.repeat} = {mb:.1f} MB train + {mb / args.repeat:.1f} MB val; {num_threads} threads, "
          f"{os.cpu_count()} CPUs, tiktoken {__import__('tiktoken').__version__}, numpy {prepare.np.__version__}")

    stories = list(prepare.read_stories(source / 'train.txt'))
    batches = [stories[i:i + prepare.BATCH_STORIES] for i in range(0, len(stories), prepare.BATCH_STORIES)]
    for run in range(args.runs):
        t0, cpu0 = time.perf_counter(), time.process_time()
        meta = prepare.prepare('full', source, Path(tmp) / 'data', num_threads=num_threads, force=True)
        tokens = meta['train']['tokens'] + meta['val']['tokens']
        end_to_end.append(tokens / (time.perf_counter() - t0))
        cpu.append(tokens / (time.process_time() - cpu0))  # per CPU-second: hardly moved by other processes
        t0 = time.perf_counter()
        tokens = sum(len(ids) for batch in batches for ids in enc.encode_ordinary_batch(batch, num_threads=num_threads))
        raw.append(tokens / (time.perf_counter() - t0))
        print(f"run {run}: end to end {end_to_end[-1] / 1e6:.2f}M tokens/s ({cpu[-1] / 1e6:.2f}M per CPU-second), "
              f"raw encode_ordinary_batch {raw[-1] / 1e6:.2f}M tokens/s")

print(f"load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} (other processes slow every figure)")
for name, figures in ((f"prepare.py end to end, bins written, {num_threads} threads", end_to_end),
                      ("prepare.py per CPU-second of this process", cpu),
                      (f"raw encode_ordinary_batch(num_threads={num_threads}), no bins", raw)):
    print(f"{name}: median {statistics.median(figures) / 1e6:.2f}M, best {max(figures) / 1e6:.2f}M tokens/s "
          f"({args.runs} runs)")
