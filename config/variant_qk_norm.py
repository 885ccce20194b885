# The baseline with RMSNorm on queries and keys per head (as in modded-nanogpt): attention logits
# stay bounded, which often allows a higher learning rate.
# python train.py config/variant_qk_norm.py
base = 'config/baseline.py'  # everything else as the baseline
model_name = 'qk_norm'
