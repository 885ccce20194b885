# A tiny model that trains 50 iterations on 2 CPU cores in well under a minute, loss clearly falling.
# It checks that everything works, not what an architecture is worth.
# python prepare.py --variant small && python train.py config/smoke.py
dataset_variant = 'small'
n_layer = 2
n_head = 4
n_embd = 64
block_size = 128
batch_size = 8
max_iters = 50
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 5
log_interval = 5
eval_interval = 25
eval_windows = 32
keep_checkpoints = 2
compile = False
dtype = 'float32'
