"""
Text from a trained model, shared by sample.py (the command line), compare.py (the stories in its
report) and eval_harness.py (the same checks of the sampling flags):

    from generate import generate_stories
    texts = generate_stories('out/baseline_s1', ['Once upon a time'], max_new_tokens=60, temperature=0)

The model encodes and decodes with the tokenizer it was trained on (runs.load_run_model).
"""
import math

import torch

import runs

# the prompts compare.py's report continues for every seed group (TinyStories-like openings)
REPORT_PROMPTS = ['Once upon a time', 'One day, a little girl named Lily', 'Tom and his dog went to the park']


def check_settings(max_new_tokens, temperature, top_k):
    """The sampling settings as one-line ValueErrors, before loading. Any length works: past the model's
    context, model.generate keeps the last block_size tokens, as nanoGPT does."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"--temperature={temperature}: expected 0 (greedy) or a positive number")
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top_k={top_k}: expected at least 1 (or leave it out to sample from every token)")
    if max_new_tokens < 1:
        raise ValueError(f"--max_new_tokens={max_new_tokens}: expected at least 1")


def sample(model, tokenizer, prompts, num_samples=1, max_new_tokens=120, temperature=0.8, top_k=200, seed=1,
           batch_size=64):
    """Continuations (text, prompt not included) of each prompt, num_samples each, prompt-major:
    [p0 s0, p0 s1, ..., p1 s0, ...]. A prompt '' starts from <|endoftext|>. Same seed, same text."""
    check_settings(max_new_tokens, temperature, top_k)
    eot = tokenizer.eot_token
    encoded = [tokenizer.encode(p) if p else [eot] for p in prompts]
    # greedy decoding gives every sample of a prompt the same text: generate each prompt once
    copies = 1 if temperature == 0 else num_samples
    rows = [ids for ids in encoded for _ in range(copies)]
    device = model.lm_head.weight.device
    generator = torch.Generator(device=device).manual_seed(seed)
    new_ids = []
    for i in range(0, len(rows), batch_size):
        new_ids += model.generate(rows[i:i + batch_size], max_new_tokens, temperature=temperature,
                                  top_k=top_k, eot_token=eot, generator=generator)
    texts = [tokenizer.decode(ids) for ids in new_ids]
    if copies == 1:
        texts = [t for t in texts for _ in range(num_samples)]
    return texts


def generate_stories(run_dir, prompts, step=None, num_samples=1, max_new_tokens=120, temperature=0.8,
                     top_k=200, seed=1, device='cpu'):
    """sample() on run_dir's checkpoint `step` (None newest, an int, 'best'), loaded with its own
    tokenizer. Raises ValueError (one line) for a missing checkpoint, tokenizer or bad setting."""
    check_settings(max_new_tokens, temperature, top_k)
    model, _, tokenizer, _ = runs.load_run_model(run_dir, step, device)
    return sample(model, tokenizer, prompts, num_samples, max_new_tokens, temperature, top_k, seed)
