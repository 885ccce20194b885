# A CPU-sized model on a 4,096-token BPE trained on TinyStories (llama2.c's choice for small models):
# 4 layers x 128 wide, context 128. With GPT-2's 50k vocabulary the output layer would be ~90% of
# each step at this width; with 4k it is a fraction, so the blocks you experiment on get the compute.
# Compare it with GPT-2-vocabulary runs on val_bpb (bits per byte), which does not depend on the tokenizer.
# python prepare.py --variant small --tokenizer bpe4k && python train.py config/tiny_bpe4k.py
dataset_variant = 'small'
tokenizer = 'bpe4k'
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
batch_size = 16
max_iters = 1000
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 50
log_interval = 25
eval_interval = 100
eval_windows = 64
checkpoint_interval = 500
compile = False
dtype = 'float32'
