# The model zoo leaderboard on a CPU: every modification of the zoo and the baseline trained with Muon,
# each against the baseline, 3 seeds each (17 groups, 51 runs), on the 4k TinyStories BPE. The runs are
# config/tiny_bpe4k.py made smaller (4 layers x 64 wide, context 64, 250 iterations of 1,024 tokens):
# about 65 CPU-seconds per run, so on 2 idle cores, two runs at a time, the sweep takes about half an
# hour (measured per run and per preset in BENCHMARKS.md, "Model zoo"). report.html ranks them.
# python prepare.py --variant small --tokenizer bpe4k && python sweep.py config/sweeps/zoo.py --parallel 2
# One GPU, a bigger model and longer runs: config/sweeps/zoo_gpu.py
base = 'config/tiny_bpe4k.py'
grid = dict(model_name=['baseline', 'relu2', 'nope', 'alibi', 'partial_rope', 'sliding_window', 'local_global',
                        'softcap', 'untied', 'parallel', 'value_residual', 'diff_attn', 'gated_attn', 'attn_sink',
                        'mla', 'moe', 'muon'],
            seed=[1, 2, 3])
overrides = dict(n_layer=4, n_head=4, n_embd=64, block_size=64, batch_size=16, max_iters=250, warmup_iters=25,
                 eval_interval=50, eval_windows=64, log_interval=25, checkpoint_interval=0)
