# The baseline with each residual branch scaled by 1/sqrt(2 * n_layer) in the forward pass
# (the init then no longer scales the output projections). For a learnable scalar per branch and
# layer instead, use model_name = 'residual_scaling_learned'.
# python train.py config/variant_residual_scaling.py
base = 'config/baseline.py'  # everything else as the baseline
model_name = 'residual_scaling'
