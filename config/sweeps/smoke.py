# The whole pipeline on a CPU in a few minutes: 2 variants x 2 seeds of the smoke config, then the report.
# python prepare.py --variant small && python sweep.py config/sweeps/smoke.py
base = 'config/smoke.py'
grid = dict(model_name=['baseline', 'gqa'], seed=[1, 2])
