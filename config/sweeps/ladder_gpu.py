# The scaling ladder on one GPU: the baseline and GPT-2's classic block at 4 sizes from ~3M to ~53M
# non-embedding parameters, 2 seeds each (16 runs), each trained on ~20 tokens per parameter (Chinchilla):
# 68M to 1.05B tokens of the full TinyStories on the 4k BPE, 32,768 tokens per iteration. Roughly an
# hour and a half on an H100 (an estimate from FLOPs at ~40% MFU, not measured). The report fits final
# val loss against training FLOPs and gives gpt2's compute multiplier against the baseline.
# python prepare.py --variant full --tokenizer bpe4k && python sweep.py config/sweeps/ladder_gpu.py
# One learning rate for every size; for each size at its own, add learning_rate=[...] to the grid (the
# report then takes each variant and size at its best and adds a learning-rate sensitivity table).
base = 'config/tiny_bpe4k.py'
grid = dict(model_name=['baseline', 'gpt2'], seed=[1, 2])
ladder = [dict(n_layer=4, n_embd=256, n_head=4, max_iters=2100),
          dict(n_layer=6, n_embd=384, n_head=6, max_iters=7000),
          dict(n_layer=8, n_embd=512, n_head=8, max_iters=16500),
          dict(n_layer=10, n_embd=640, n_head=10, max_iters=32000)]
overrides = dict(dataset_variant='full', block_size=256, batch_size=128, learning_rate=1e-3, min_lr=1e-4,
                 warmup_iters=200, eval_interval=500, eval_windows=256, log_interval=50, checkpoint_interval=2000,
                 compile=True, dtype='bfloat16')
