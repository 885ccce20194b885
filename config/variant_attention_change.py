# The baseline with grouped-query attention: 8 query heads share 2 key/value heads.
# Multi-query attention: --n_kv_head=1 (or model_name = 'mqa'); n_kv_head = n_head is plain multi-head.
# python train.py config/variant_attention_change.py
base = 'config/baseline.py'  # everything else as the baseline
model_name = 'gqa'
n_kv_head = 2
