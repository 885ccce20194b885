# Is a variant better than the baseline beyond seed noise? The seed's three variants and GPT-2's
# block, 3 seeds each: 12 runs of config/baseline.py (a few minutes each on an H100).
# python sweep.py config/sweeps/variants.py                 # one run per visible GPU at a time
# python sweep.py config/sweeps/variants.py --max_iters=200 --dry_run
base = 'config/baseline.py'
grid = dict(model_name=['baseline', 'residual_scaling', 'gqa', 'gpt2'], seed=[1, 2, 3])
