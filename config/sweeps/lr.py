# The same variants, each at three learning rates, 2 seeds each (24 runs): the report's "tuned" table
# compares every variant at its own best learning rate, not at the one the baseline was tuned for.
# python sweep.py config/sweeps/lr.py
base = 'config/baseline.py'
grid = dict(model_name=['baseline', 'residual_scaling', 'gqa', 'gpt2'], learning_rate=[3e-4, 1e-3, 3e-3],
            seed=[1, 2])
tune = ['learning_rate']
