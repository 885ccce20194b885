# Does a variant's gain survive scale? The baseline and GPT-2's classic block (LayerNorm, GELU, learned
# positions) at 4 sizes, 2 seeds each (16 runs) on the 4k TinyStories BPE: ~0.1M to ~1.6M non-embedding
# parameters, each trained on more tokens than the one below (0.33M to 0.57M tokens; ~10x in training FLOPs
# from the smallest to the largest). The report (compare.py) fits final val loss against training FLOPs
# per variant and gives the compute multiplier of gpt2 against the baseline, with bootstrap intervals over
# the seeds: comparisons/ladder_cpu/scaling.md, scaling.png. Time on 2 CPU cores: BENCHMARKS.md ("Scaling").
# python prepare.py --variant small --tokenizer bpe4k && python sweep.py config/sweeps/ladder_cpu.py
# README "Verdicts across scale" says how to read a multiplier and when not to trust it.
base = 'config/tiny_bpe4k.py'
grid = dict(model_name=['baseline', 'gpt2'], seed=[1, 2])
# one size per entry: layers x width (head size 32) and the token budget (max_iters x 2,048 tokens)
ladder = [dict(n_layer=2, n_embd=64, n_head=2, max_iters=160),
          dict(n_layer=3, n_embd=96, n_head=3, max_iters=200),
          dict(n_layer=4, n_embd=128, n_head=4, max_iters=240),
          dict(n_layer=5, n_embd=160, n_head=5, max_iters=280)]
overrides = dict(block_size=128, batch_size=16, warmup_iters=25, eval_interval=125, eval_windows=64,
                 log_interval=25, checkpoint_interval=0)
