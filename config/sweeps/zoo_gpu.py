# The model zoo leaderboard on one GPU: every modification of the zoo and the baseline trained with Muon,
# each against the baseline, 3 seeds each (51 runs), on the 4k TinyStories BPE: 6 layers x 384 wide,
# context 256, 2,000 iterations of 32,768 tokens (65M tokens, ~6 epochs of the small split) per run.
# Sized for about a minute per run on an H100 (an estimate from the baseline's step time, not measured
# for every preset: see BENCHMARKS.md "Model zoo"); the whole sweep in roughly an hour.
# python prepare.py --variant small --tokenizer bpe4k && python sweep.py config/sweeps/zoo_gpu.py
# Windows and the MLA latent are the presets' (attn_window 32, kv_latent_dim 32); to scale them with the
# model, add e.g. overrides attn_window=64 or kv_latent_dim=96 (every run) or a grid axis.
base = 'config/tiny_bpe4k.py'
grid = dict(model_name=['baseline', 'relu2', 'nope', 'alibi', 'partial_rope', 'sliding_window', 'local_global',
                        'softcap', 'untied', 'parallel', 'value_residual', 'diff_attn', 'gated_attn', 'attn_sink',
                        'mla', 'moe', 'muon'],
            seed=[1, 2, 3])
overrides = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=128, max_iters=2000,
                 warmup_iters=100, learning_rate=2e-3, min_lr=2e-4, eval_interval=250, eval_windows=256,
                 log_interval=25, checkpoint_interval=1000, compile=True, dtype='bfloat16')
