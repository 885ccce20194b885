"""prepare.py: bins and meta.json with GPT-2 and a trained BPE, the bundled sample and the offline
default, local formats, caching, content-named files and the meta.json switch, bad input.
(The tokenizers themselves: test_tokenizer.py.)"""
import gzip
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_script, snapshot

sys.path.insert(0, str(REPO))
import prepare  # noqa: E402
from tokenizer import GPT2_INFO, file_sha256, load_tokenizer  # noqa: E402

EOT = GPT2_INFO['eot_token']
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
    tok = load_tokenizer(meta['tokenizer_info'], prepare.variant_dir(data_dir, variant, tokenizer))
    tokens = prepare.load_bin(data_dir, variant, split, tokenizer=tokenizer)
    ends = np.flatnonzero(tokens == tok.eot_token)
    assert len(tokens) and tokens[-1] == tok.eot_token
    return [tok.decode(tokens[a:b]) for a, b in zip([0, *(ends[:-1] + 1)], ends)]


def main_error(*args):
    """prepare.main(args) in this process, expecting the one-line error exit (exit status 1); returns the line."""
    with pytest.raises(SystemExit) as exc:
        prepare.main([str(a) for a in args])
    message = exc.value.code
    assert isinstance(message, str), message  # sys.exit(str): printed to stderr, exit status 1
    assert message.startswith('prepare.py: error: ') and '\n' not in message, message
    return message


@pytest.fixture
def prepared(tmp_path):
    """A data_dir holding the small variant prepared from STORIES (train) and two val stories."""
    data_dir = tmp_path / 'data'
    prepare.prepare('small', write_source(tmp_path / 'good', STORIES, STORIES[:2]), data_dir)
    return data_dir


def source_stories(path):
    return [s.strip() for s in path.read_text(encoding='utf-8').split('\n<|endoftext|>\n') if s.strip()]


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
    assert meta['tokenizer_info'] == GPT2_INFO and meta['source'] == 'sample'
    enc = load_tokenizer()
    for split, name in (('train', 'train.txt'), ('val', 'validation.txt')):
        stories = source_stories(tinystories_dir / name)
        tokens = prepare.load_bin(small_data, 'small', split)
        assert tokens.dtype == np.uint16 and not tokens.flags.writeable
        assert len(tokens) == meta[split]['tokens']
        # the sample holds fewer stories than the small defaults (50,000 / 5,000): all are kept
        assert meta[split]['stories'] == len(stories) == np.count_nonzero(tokens == EOT)
        first_end = int(np.argmax(tokens == EOT))
        assert enc.decode(tokens[:first_end]) == stories[0]
    assert (meta['train']['stories'], meta['val']['stories']) == (4709, 1000)
    val = prepare.load_bin(small_data, 'small', 'val')
    assert val.tolist() == [t for s in stories for t in enc.encode(s) + [EOT]]


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
    return meta, load_tokenizer(meta['tokenizer_info'], bpe_data / 'small-bpe4k')


def test_bpe_meta_names_its_content_named_tokenizer(bpe_data):
    meta, tok = bpe4k(bpe_data)
    file = f"tokenizer-{tok.sha256[:16]}.json"
    assert (meta['tokenizer'], meta['vocab_size'], meta['eot_token'], meta['tokenizer_file']) == \
        ('bpe4k', 4096, tok.eot_token, file)
    assert meta['tokenizer_sha256'] == file_sha256(bpe_data / 'small-bpe4k' / file) == tok.sha256
    assert meta['tokenizer_info'] == tok.info() == dict(name='bpe4k', vocab_size=4096, eot_token=tok.eot_token,
                                                         sha256=tok.sha256, file=file)
    assert (meta['source'], meta['tokenizer_train_stories']) == ('sample', 4709)
    assert sorted(p.name for p in (bpe_data / 'small-bpe4k').iterdir()) == sorted(
        ['.prepare.lock', 'meta.json', file, meta['train']['file'], meta['val']['file']])


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
    tok = load_tokenizer(meta['tokenizer_info'], tmp_path / 'd' / 'small-bpe257')
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
# caching, content-named files, the meta.json switch, the folder lock

def bin_path(data_dir, split, variant='small', tokenizer='gpt2'):
    """The bin that data_dir's meta.json names for split."""
    meta = prepare.read_meta(data_dir, variant, tokenizer)
    return prepare.variant_dir(data_dir, variant, tokenizer) / meta[split]['file']


def test_cache_skip_force_and_rebuild_on_change(tmp_path, capsys):
    source = write_source(tmp_path / 'src', STORIES, STORIES[:2])
    args = ['--variant', 'small', '--source', str(source), '--data_dir', str(tmp_path / 'd')]
    bins = tmp_path / 'd' / 'small'
    prepare.main(args)
    assert 'wrote' in capsys.readouterr().out
    before = snapshot(bins, mtimes=True)
    prepare.main(args)
    assert 'up to date' in capsys.readouterr().out
    assert snapshot(bins, mtimes=True) == before  # nothing rewritten
    train = bin_path(tmp_path / 'd', 'train')
    prepare.main(args + ['--force'])
    assert 'wrote' in capsys.readouterr().out
    after = snapshot(bins, mtimes=True)  # the same content has the same name: only meta.json is rewritten
    assert after['meta.json'][1] != before['meta.json'][1] and after[train.name] == before[train.name]
    prepare.main(args + ['--small_train_samples', '2'])  # different parameters rebuild
    assert 'wrote' in capsys.readouterr().out
    assert decoded_stories(tmp_path / 'd', 'small', 'train') == STORIES[:2]
    assert not train.exists() and bin_path(tmp_path / 'd', 'train') != train  # the old bin is removed
    with open(source / 'train.txt', 'a', encoding='utf-8') as f:  # a changed source file rebuilds
        f.write('<|endoftext|>\nA new first story? No, a new last one.\n')
    prepare.main(args + ['--small_train_samples', '2'])
    assert 'wrote' in capsys.readouterr().out
    with open(bin_path(tmp_path / 'd', 'train'), 'r+b') as f:  # damage a bin: same parameters now rebuild it
        f.write(b'\x00\x00')
    prepare.main(args + ['--small_train_samples', '2'])
    assert 'wrote' in capsys.readouterr().out
    assert decoded_stories(tmp_path / 'd', 'small', 'train') == STORIES[:2]
    meta = prepare.read_meta(tmp_path / 'd', 'small')
    assert sorted(os.listdir(bins)) == sorted(['.prepare.lock', 'meta.json', meta['train']['file'], meta['val']['file']])
    for split in ('train', 'val'):
        assert meta[split]['file'] == f"{split}-{meta[split]['sha256'][:16]}.bin"  # named after the content
    assert sorted(os.listdir(tmp_path / 'd')) == ['small']


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
    before = snapshot(prepared / 'small', mtimes=True)
    fail_on_call(monkeypatch, 4)  # 2 val batches done (val's bin complete), midway through train
    other = write_source(tmp_path / 'other', STORIES[::-1], STORIES[2:])
    with pytest.raises(RuntimeError, match='interrupted'):
        prepare.prepare('small', other, prepared)
    assert snapshot(prepared / 'small', mtimes=True) == before  # nothing changed, nothing left behind
    assert os.listdir(prepared) == ['small']
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


def test_a_killed_prepares_files_are_ignored_then_removed(prepared, tmp_path, capsys):
    """kill -9 runs no cleanup: it leaves a temporary file and complete bins that meta.json does not
    name. Readers never look at them; the next prepare that writes the folder removes them."""
    folder = prepared / 'small'
    before = snapshot(folder, mtimes=True)
    (folder / f'train.bin.tmp-{socket.gethostname()}-12345').write_bytes(b'half a bin')
    (folder / 'val-0123456789abcdef.bin').write_bytes(b'junk')
    assert decoded_stories(prepared, 'small', 'val') == STORIES[:2]
    prepare.prepare('small', tmp_path / 'good', prepared)  # the source of the `prepared` fixture
    assert 'up to date' in capsys.readouterr().out  # reading never deletes
    assert len(os.listdir(folder)) == len(before) + 2
    prepare.prepare('small', tmp_path / 'good', prepared, force=True)
    assert snapshot(folder, mtimes=True).keys() == before.keys()


def test_a_run_reading_the_bins_keeps_them_through_a_rebuild(prepared, tmp_path):
    """The bins a reader has open stay readable while a rebuild replaces and removes them (POSIX)."""
    train = prepare.load_bin(prepared, 'small', 'train')
    old = train.tolist()
    prepare.prepare('small', write_source(tmp_path / 'other', STORIES[::-1], STORIES[2:]), prepared)
    assert decoded_stories(prepared, 'small', 'train') == STORIES[::-1]
    assert train.tolist() == old and not Path(train.filename).exists()  # removed, still read


def test_one_prepare_at_a_time_per_folder(prepared, tmp_path):
    fcntl = pytest.importorskip('fcntl')  # the lock is POSIX's flock
    before = snapshot(prepared / 'small', mtimes=True)
    with open(prepared / 'small' / '.prepare.lock') as held:  # another prepare.py writing the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        err = main_error('--variant', 'small', '--source', write_source(tmp_path / 'other', STORIES[::-1], STORIES),
                         '--data_dir', prepared)
    assert err == f"prepare.py: error: {prepared / 'small'}: another prepare.py is writing this folder; wait for it " \
                  f"to finish"
    assert snapshot(prepared / 'small', mtimes=True) == before


def test_data_prepared_by_the_old_layout_reads_and_is_replaced(prepared, tmp_path, capsys):
    """Folders written before bins were content-named hold train.bin / val.bin / tokenizer.json, and a
    meta.json whose `file` says so (or nothing): they read as before; a rebuild removes the old names."""
    folder = prepared / 'small'
    meta = json.loads((folder / 'meta.json').read_text(encoding='utf-8'))
    for split in ('train', 'val'):
        os.rename(folder / meta[split]['file'], folder / f'{split}.bin')
        meta[split]['file'] = f'{split}.bin'
    del meta['val']['file']
    (folder / 'meta.json').write_text(json.dumps(meta), encoding='utf-8')
    assert decoded_stories(prepared, 'small', 'train') == STORIES
    assert decoded_stories(prepared, 'small', 'val') == STORIES[:2]
    prepare.prepare('small', tmp_path / 'good', prepared)
    assert 'up to date' in capsys.readouterr().out
    prepare.prepare('small', tmp_path / 'good', prepared, force=True)
    assert not {'train.bin', 'val.bin'} & set(os.listdir(folder))
    assert decoded_stories(prepared, 'small', 'train') == STORIES


def test_write_token_bins_replaces_a_variant_whole(tmp_path):
    out = tmp_path / 'd' / 'small'
    prepare.write_token_bins(out, {'train': [1, 2, 3, EOT], 'val': [4, EOT]}, source='synthetic')
    meta = prepare.write_token_bins(out, {'train': [5, 6, EOT], 'val': [7, EOT]}, source='synthetic')
    assert meta['tokenizer_info'] == GPT2_INFO and meta['source'] == 'synthetic'
    assert prepare.load_bin(tmp_path / 'd', 'small', 'train').tolist() == [5, 6, EOT]
    assert sorted(os.listdir(out)) == sorted(['.prepare.lock', 'meta.json', meta['train']['file'], meta['val']['file']])


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
    before = snapshot(prepared / 'small', mtimes=True)
    err = main_error('--variant', variant, '--source', source, '--data_dir', prepared, '--tokenizer', tokenizer)
    assert names in err and expect in err, err
    assert snapshot(prepared / 'small', mtimes=True) == before
    assert os.listdir(prepared) == ['small']  # nothing else created
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
    before = snapshot(prepared / 'small', mtimes=True)
    err = main_error('--variant', 'small', '--source', 'sample', '--data_dir', prepared)
    assert expect in err and 'git checkout data_sample' in err, err
    assert snapshot(prepared / 'small', mtimes=True) == before and os.listdir(prepared) == ['small']


def test_bad_input_exits_1_with_one_line_on_stderr(tmp_path):
    proc = run_script(REPO / 'prepare.py', '--variant', 'small', '--tokenizer', 'bpe:100', '--data_dir', tmp_path)
    assert proc.returncode == 1 and proc.stdout == ''
    assert proc.stderr == "prepare.py: error: tokenizer 'bpe:100': 100 tokens is below 257 (the 256 bytes plus " \
                          "end-of-text)\n"
    assert os.listdir(tmp_path) == []


# -----------------------------------------------------------------------------
# load_bin checks

def test_load_bin_detects_size_and_checksum_mismatch(prepared):
    path = bin_path(prepared, 'train')
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
    assert prepare.read_meta(prepared, 'small')['tokenizer_info'] == GPT2_INFO
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
