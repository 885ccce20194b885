# The modern baseline sized for TinyStories on one GPU: 8 layers x 512 wide, context 512
# (about 51M parameters, 25M of them the tied embedding). ~0.5M tokens per iteration.
# python train.py config/baseline.py
model_name = 'baseline'
n_layer = 8
n_head = 8
n_embd = 512
block_size = 512
batch_size = 64
gradient_accumulation_steps = 16   # 64 * 512 * 16 = 524,288 tokens per iteration
dataset_variant = 'full'
max_iters = 5000                   # ~2.6B tokens, ~5 epochs of the full train split
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 200
eval_interval = 250
log_interval = 10
checkpoint_interval = 1000
