# The baseline with RMSNorm on queries and keys per head (as in modded-nanogpt): attention logits
# stay bounded, which often allows a higher learning rate.
# python train.py config/variant_qk_norm.py
import os
exec(open(os.path.join(os.path.dirname(__file__), 'baseline.py')).read())  # everything else as the baseline
model_name = 'qk_norm'
