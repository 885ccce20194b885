"""
Speed of eval_harness.py on the shipped prompt file: the harness's way (generative prompts batched
with the key/value cache, multiple-choice pairs scored in batches) beside the naive way (one prompt
at a time, the whole context re-run for every new token; one prompt+choice pair at a time).
Asserts that both give identical greedy completions and identical choices, then prints prompts/s;
then the seconds each probe of probes.py takes on the same model (--probes).

    python bench/bench_eval.py                          # random weights, config/smoke.py's shape
    python bench/bench_eval.py --shape config/baseline.py --max_new_tokens 20
    python bench/bench_eval.py --checkpoint out/smoke/checkpoints/ckpt_000050.pt

Without --checkpoint a GPT of the config's shape is built with random weights, saved with
runs.save_checkpoint to a temporary folder and loaded back with runs.load_checkpoint.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import eval_harness as eh  # noqa: E402
import probes  # noqa: E402
from configurator import read_config_file  # noqa: E402
from model import GPT, make_config, pick_device  # noqa: E402
from runs import load_checkpoint, save_checkpoint  # noqa: E402
from prepare import read_stories, sample_files  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402


def model_from_config(path, seed, device):
    settings = read_config_file(path)  # a variant config's `base` (config/baseline.py) included
    shape = {k: settings[k] for k in ('n_layer', 'n_head', 'n_kv_head', 'n_embd', 'block_size') if k in settings}
    torch.manual_seed(seed)
    model = GPT(make_config(settings.get('model_name', 'baseline'), **shape))
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(os.path.join(tmp, 'ckpt_000000.pt'), model, iter_num=0)
        return load_checkpoint(os.path.join(tmp, 'ckpt_000000.pt'), device)[0]


@torch.no_grad()
def naive_generate(model, ids, max_new_tokens, eot_token):
    """Greedy, one prompt, no cache: the full context goes through the model for every new token."""
    idx = torch.tensor([ids], device=model.lm_head.weight.device)
    out = []
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -model.config.block_size:])
        nxt = int(logits[0, -1, :model.config.vocab_size].argmax())
        if nxt == eot_token:
            break
        out.append(nxt)
        idx = torch.cat([idx, idx.new_tensor([[nxt]])], dim=1)
    return out


def naive_evaluate(model, tok, prompts, max_new_tokens):
    results = []
    for p in prompts:
        ids = tok.encode(p['prompt'])
        if p['type'] == 'generate':
            generated = tok.decode(naive_generate(model, ids, max_new_tokens, tok.eot_token))
            results.append(dict(generated=generated, completion=eh.cut_completion(generated)))
        else:
            lps = [model.score([ids], [tok.encode(' ' + c)], batch_size=1)[0][0] for c in p['choices']]
            results.append(eh.choice_result(p, lps))
    return results


def timed(fn, repeats):
    """(result, best wall time of `repeats` runs): the minimum is the least disturbed by other processes."""
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip())
    ap.add_argument('--prompts', default=eh.DEFAULT_PROMPTS)
    ap.add_argument('--checkpoint', default=None, help='a checkpoint to time (default: random weights)')
    ap.add_argument('--shape', default='config/smoke.py', help='config file whose model shape to build')
    ap.add_argument('--max_new_tokens', type=int, default=20)
    ap.add_argument('--batch_size', type=int, default=64)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--repeats', type=int, default=3, help='time each way this many times, keep the best')
    ap.add_argument('--probes', default='length,copy,generation',
                    help="probes.py's probes to time with their default settings ('' for none)")
    ap.add_argument('--probes_only', action='store_true', help='time the probes only, not the prompt file')
    args = ap.parse_args()

    args.device = pick_device(args.device)
    prompts = eh.load_prompts(args.prompts)
    if args.checkpoint:  # a run's checkpoint: its tokenizer is the one recorded (run_dir/tokenizer.json)
        model, ckpt = load_checkpoint(args.checkpoint, args.device)
        tok = load_tokenizer(ckpt.get('tokenizer'), os.path.dirname(os.path.dirname(os.path.abspath(args.checkpoint))))
        source = args.checkpoint
    else:
        tok = load_tokenizer()  # GPT-2
        model = model_from_config(args.shape, args.seed, args.device)
        source = f'random weights, shape of {args.shape}'
    model.eval()
    cfg = model.config
    print(f"model: {source}: {cfg.model_name}, n_layer={cfg.n_layer}, n_head={cfg.n_head}, n_embd={cfg.n_embd}, "
          f"block_size={cfg.block_size}, {model.num_params() / 1e6:.2f}M parameters")
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads; "
          f"max_new_tokens={args.max_new_tokens}, batch_size={args.batch_size}, best of {args.repeats}")

    if args.probes_only:
        return time_probes(model, tok, [p for p in args.probes.split(',') if p], args.repeats)
    kinds = {'generate': [p for p in prompts if p['type'] == 'generate'],
             'choice': [p for p in prompts if p['type'] == 'choice']}
    eh.evaluate_model(model, tok, prompts[:4], args.max_new_tokens, args.batch_size)  # warm-up
    rows = []
    for kind, subset in kinds.items():
        fast, fast_s = timed(lambda: eh.evaluate_model(model, tok, subset, args.max_new_tokens, args.batch_size),
                             args.repeats)
        slow, slow_s = timed(lambda: naive_evaluate(model, tok, subset, args.max_new_tokens), args.repeats)
        for p, f, s in zip(subset, fast, slow):
            if kind == 'generate':
                assert f['generated'] == s['generated'], \
                    f"{p['id']}: batched {f['generated']!r} != naive {s['generated']!r}"
            else:
                assert f['chosen_index'] == s['chosen_index'], f"{p['id']}: batched and naive pick different choices"
        rows.append((kind, len(subset), fast_s, slow_s))
    rows.append(('all', len(prompts), sum(r[2] for r in rows), sum(r[3] for r in rows)))
    print('identical greedy completions and choices: yes')
    print(f"{'prompts':<10}{'n':>4}{'harness s':>11}{'prompts/s':>11}{'naive s':>10}{'prompts/s':>11}{'speedup':>9}")
    for kind, n, fast_s, slow_s in rows:
        print(f"{kind:<10}{n:>4}{fast_s:>11.2f}{n / fast_s:>11.1f}{slow_s:>10.2f}{n / slow_s:>11.1f}"
              f"{slow_s / fast_s:>8.1f}x")
    time_probes(model, tok, [p for p in args.probes.split(',') if p], args.repeats)


def time_probes(model, tok, names, repeats):
    """Seconds per run of each probe (best of `repeats`), default settings, the bundled validation stories."""
    if not names:
        return
    data = dict(stories=list(read_stories(sample_files()['val'])))
    settings = dict(probes.DEFAULT_SETTINGS)
    probes.token_bytes(tok)  # once per tokenizer, not part of a probe's cost
    print(f"\nprobes (settings: {settings})")
    print(f"{'probe':<12}{'s per run':>10}  status")
    for name in names:
        (_, detail), seconds = timed(lambda: probes.PROBES[name](model, tok, data, settings), repeats)
        print(f"{name:<12}{seconds:>10.2f}  {detail.get('status', 'ok')}")


if __name__ == '__main__':
    main()
