"""
Print stories from a trained run: the first thing to look at on TinyStories, because the loss
numbers only say how much better a model is, not what it writes.

    python sample.py --run_name baseline_s1                          # 3 stories from the newest checkpoint
    python sample.py --run_name baseline_s1 --checkpoint_step best --prompt 'Once upon a time'
    python sample.py --run_name gqa_s1 --out_dir out --prompt_file prompts.txt --num_samples 5
    python sample.py --run_name baseline_s1 --temperature 0 --prompt 'Tom is a boy. Lily is a'   # greedy

The run is out/<run_name>/ (--runs_dir, synonym --out_dir); --checkpoint_step picks an iteration
or `best` (checkpoints/ckpt_best.pt, the lowest val loss; default: the newest checkpoint). The model
encodes and decodes with the tokenizer it was trained on (runs.load_run_model). Without a prompt a
story starts from <|endoftext|>, as every story in the training data does. --prompt_file holds one
prompt per line; blank lines are skipped. Trailing whitespace is dropped from every prompt (the
model writes the space before the next word itself).

Every sample of every prompt is generated in one batch (up to --batch_size rows at a time) with the
key/value cache; a story ends at <|endoftext|> or after --max_new_tokens tokens. --temperature 0 is
greedy decoding: the continuation is then exactly what eval_harness.py generates for that prompt,
and all samples of a prompt are the same. Otherwise the output is fixed by --seed.
"""
import argparse
import sys
from pathlib import Path

import runs
from generate import REPORT_PROMPTS, check_settings, generate_stories, sample  # noqa: F401 (sample.X still works)
from model import pick_device

# -----------------------------------------------------------------------------
# command line


def read_prompt_file(path):
    """One prompt per line, blank lines skipped, trailing whitespace dropped."""
    try:
        text = Path(path).read_text(encoding='utf-8')
    except FileNotFoundError:
        raise ValueError(f"{path}: prompt file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the prompt file ({e})") from None
    prompts = [line.rstrip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path}: the prompt file is empty (expected one prompt per line)")
    return prompts


def find_run(runs_dir, run_name):
    """The run folder runs_dir/run_name, or a one-line RunError that lists the runs there."""
    found = runs.find_runs(runs_dir)
    for run_dir in found:
        if run_dir.name == run_name:
            return run_dir
    names = ', '.join(r.name for r in found[:10]) + (', ...' if len(found) > 10 else '')
    raise runs.RunError(f"no run folder {Path(runs_dir) / run_name} (with config.json and metrics.csv); "
                        f"runs in {runs_dir}: {names or 'none'}")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs_dir', '--out_dir', dest='runs_dir', default='out',
                    help="folder of run folders, train.py's out_dir (default: out)")
    ap.add_argument('--run_name', required=True, help='the run to sample from (a folder in --runs_dir)')
    ap.add_argument('--checkpoint_step', type=runs.parse_step, default=None, metavar='N|best',
                    help="this iteration's checkpoint, or best (lowest val loss); default: the newest")
    prompt = ap.add_mutually_exclusive_group()
    prompt.add_argument('--prompt', default=None, help='text the stories start with (default: <|endoftext|>)')
    prompt.add_argument('--prompt_file', default=None, help='a file with one prompt per line')
    ap.add_argument('--num_samples', type=int, default=3, help='stories per prompt (default: 3)')
    ap.add_argument('--max_new_tokens', type=int, default=200, help='tokens per story at most (default: 200)')
    ap.add_argument('--temperature', type=float, default=0.8, help='0 = greedy; higher = more random (default: 0.8)')
    ap.add_argument('--top_k', type=int, default=200, help='draw from the k likeliest tokens only (default: 200)')
    ap.add_argument('--seed', type=int, default=1, help='sampling seed (default: 1)')
    ap.add_argument('--batch_size', type=int, default=64, help='stories generated at once (default: 64)')
    ap.add_argument('--device', default='auto', help='auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps')
    ap.error = fail  # one line and exit 1, not a usage dump
    args = ap.parse_args(argv)
    if args.num_samples < 1:
        fail(f"--num_samples={args.num_samples}: expected at least 1")
    if args.batch_size < 1:
        fail(f"--batch_size={args.batch_size}: expected at least 1")
    if args.prompt is not None and not args.prompt.strip():
        fail("--prompt is empty: give some text, or leave --prompt out to start from <|endoftext|>")
    try:
        check_settings(args.max_new_tokens, args.temperature, args.top_k)
    except ValueError as e:
        fail(e)
    return args


def fail(message):
    sys.exit(f"sample.py: error: {message}")


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.prompt is not None:
            prompts = [args.prompt.rstrip()]
        elif args.prompt_file is not None:
            prompts = read_prompt_file(args.prompt_file)
        else:
            prompts = ['']  # a story from the start: <|endoftext|>
        device = pick_device(args.device)
        run_dir = find_run(args.runs_dir, args.run_name)
        model, ckpt, tokenizer, label = runs.load_run_model(run_dir, args.checkpoint_step, device)
    except ValueError as e:  # RunError, CheckpointError, DataError: one line each
        fail(e)

    for i, p in enumerate(prompts):
        n = len(tokenizer.encode(p))
        if n > model.config.block_size:
            print(f"note: prompt {i + 1} is {n} tokens; the model sees only the last {model.config.block_size} "
                  f"(block_size)", file=sys.stderr)
    decoding = 'greedy' if args.temperature == 0 else \
        f'temperature {args.temperature}, top_k {args.top_k}, seed {args.seed}'
    where = f"step {label}"
    if label == 'best':
        where = f"the best checkpoint (iteration {ckpt.get('iter_num', '?')})"
    print(f"{run_dir.name} at {where}, {tokenizer.name} tokenizer, {decoding}, device {device}")
    texts = sample(model, tokenizer, prompts, args.num_samples, args.max_new_tokens, args.temperature,
                   args.top_k, args.seed, args.batch_size)
    for i, text in enumerate(texts):
        p, s = divmod(i, args.num_samples)
        print(f"\n--- prompt {p + 1}, sample {s + 1} ---")
        print(prompts[p] + text)


if __name__ == '__main__':
    main()
