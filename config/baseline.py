# The modern baseline, sized for TinyStories on one GPU: 8 layers x 512 wide, context 512 (51M
# parameters, 26M of them the tied embedding). On the small split (50k stories, ~10M tokens):
# 1,500 iterations x 32k tokens = 49M tokens, ~5 epochs, a few minutes on an H100.
# python prepare.py --variant small && python train.py config/baseline.py
# Full data: python prepare.py --variant full, then
# python train.py config/baseline.py --dataset_variant=full --gradient_accumulation_steps=8 --max_iters=5000
model_name = 'baseline'
n_layer = 8
n_head = 8
n_embd = 512
block_size = 512
batch_size = 64
gradient_accumulation_steps = 1   # 64 * 512 = 32,768 tokens per iteration
dataset_variant = 'small'
max_iters = 1500
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 100
eval_interval = 100
log_interval = 10
checkpoint_interval = 500
