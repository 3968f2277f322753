"""Checkpoints by URL, with no internet: each test serves files from a loopback HTTP server on
127.0.0.1 that it starts and stops, and caches into its own TORCH_HOME."""
import http.server
import os
import os.path as osp
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
import torch

import mmmv  # noqa: F401  (installs the safe loaders)
from _reliability_helpers import Marker
from mmmv.checkpoint import (CheckpointDownloadError, CheckpointError, UnsafeCheckpointError,
                             cache_path, download_checkpoint, load_checkpoint)
from mmmv.checkpoint import download as download_module
from mmmv.models import MambaVision

ARCH = dict(dim=16, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4))
NAME = 'mambavision_tiny_1k.pth.tar'


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the server's folder; counts GETs; ``cut`` sends half a file and hangs up."""

    def __init__(self, request, client_address, server):
        super().__init__(request, client_address, server, directory=server.folder)

    def do_GET(self):
        with self.server.lock:
            self.server.requests.append(self.path)
        if not self.server.cut:
            return super().do_GET()
        data = open(osp.join(self.server.folder, self.path.lstrip('/')), 'rb').read()
        self.send_response(200)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])

    def log_message(self, *args):
        pass


@contextmanager
def serving(folder, cut=False):
    """An HTTP server on 127.0.0.1 serving ``folder``; yields it (``.url(name)``,
    ``.requests``); stopped and closed on exit."""
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    server.folder, server.cut, server.requests, server.lock = str(folder), cut, [], threading.Lock()
    server.url = lambda name: f'http://127.0.0.1:{server.server_address[1]}/{name}'
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    return home


def _imagenet_checkpoint(folder):
    """A file in the layout of NVIDIA's ImageNet .pth.tar (classifier keys, Namespace args)."""
    import argparse
    torch.manual_seed(3)
    model = MambaVision(arch=ARCH)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in model.state_dict().items() if not k.startswith('outnorm')}
    state.update({'head.weight': torch.zeros(1000, 128), 'head.bias': torch.zeros(1000)})
    path = folder / NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': state, 'args': argparse.Namespace(model='mamba_vision_T')}, path)
    return path


def _pretrained(checkpoint):
    model = MambaVision(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    model.init_weights()
    return model.state_dict()


def test_url_loads_the_same_weights_as_the_file_then_from_the_cache(tmp_path, torch_home):
    local = _imagenet_checkpoint(tmp_path / 'served')
    expected = _pretrained(local)
    with serving(tmp_path / 'served') as server:
        url = server.url(NAME)
        first = _pretrained(url)
        assert server.requests == ['/' + NAME]
    cached = torch_home / 'hub' / 'checkpoints' / NAME
    assert cache_path(url) == str(cached)
    assert cached.read_bytes() == local.read_bytes()
    assert sorted(os.listdir(cached.parent)) == [f'.{NAME}.lock', NAME]  # no partial file
    second = _pretrained(url)  # the server is gone: from the cache
    for key, value in expected.items():
        if key.startswith('outnorm'):  # not in a classifier checkpoint: random init
            continue
        torch.testing.assert_close(first[key], value, rtol=0, atol=0, msg=key)
        torch.testing.assert_close(second[key], value, rtol=0, atol=0, msg=key)


def test_code_carrying_file_by_url_is_refused(tmp_path, torch_home):
    marker = tmp_path / 'marker'
    (tmp_path / 'served').mkdir()
    torch.save({'state_dict': {}, 'payload': Marker(str(marker))},
               tmp_path / 'served' / 'evil.pth')
    with serving(tmp_path / 'served') as server:
        url = server.url('evil.pth')
        with pytest.raises(UnsafeCheckpointError, match=f"checkpoint '{url}': refused"):
            _pretrained(url)
    assert not marker.exists()


def _closed_port_url():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}/{NAME}'


def _assert_offline_advice(message, url):
    path = cache_path(url)
    assert message.startswith(f"checkpoint '{url}': cannot download it (")
    assert '--cfg-options model.backbone.init_cfg.checkpoint=PATH' in message
    assert f"place the file at '{path}'" in message
    assert '\n' not in message
    assert not os.path.exists(path)
    assert [n for n in os.listdir(osp.dirname(path)) if not n.endswith('.lock')] == []


def test_unreachable_url_fails_at_once_naming_the_ways_out(torch_home):
    url = _closed_port_url()
    start = time.monotonic()
    with pytest.raises(CheckpointDownloadError) as info:
        _pretrained(url)
    assert time.monotonic() - start < 60
    assert 'Connection refused' in str(info.value)
    _assert_offline_advice(str(info.value), url)


@contextmanager
def _silent_server():
    """A socket that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen(8)
        yield f'http://127.0.0.1:{s.getsockname()[1]}/{NAME}'


def test_silent_server_times_out(torch_home, monkeypatch):
    monkeypatch.setattr(download_module, 'TIMEOUT', 1)
    with _silent_server() as url:
        start = time.monotonic()
        with pytest.raises(CheckpointDownloadError, match='no answer within 1 s') as info:
            load_checkpoint(url)
        assert time.monotonic() - start < 10
    _assert_offline_advice(str(info.value), url)


@pytest.mark.slow
def test_silent_server_fails_within_60_s_by_default(torch_home):
    assert download_module.TIMEOUT < 60
    with _silent_server() as url:
        start = time.monotonic()
        with pytest.raises(CheckpointDownloadError, match='no answer within '):
            load_checkpoint(url)
        assert time.monotonic() - start < 60


def test_partial_download_never_becomes_the_cached_file(tmp_path, torch_home):
    _imagenet_checkpoint(tmp_path / 'served')
    with serving(tmp_path / 'served', cut=True) as server:
        url = server.url(NAME)
        with pytest.raises(CheckpointDownloadError, match='connection closed after') as info:
            load_checkpoint(url)
    _assert_offline_advice(str(info.value), url)


def test_corrupt_cached_file_names_the_cache_path(tmp_path, torch_home):
    _imagenet_checkpoint(tmp_path / 'served')
    with serving(tmp_path / 'served') as server:
        url = server.url(NAME)
        path = download_checkpoint(url)
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(url)
    message = str(info.value)
    assert message.startswith(f"checkpoint '{url}': is truncated or corrupt (its cached copy "
                              f"'{path}')")
    assert f"Delete the cached copy '{path}'" in message and 'UNSAFE' not in message


def test_progress_bar_only_when_asked_or_on_a_terminal(tmp_path, torch_home, capsys):
    _imagenet_checkpoint(tmp_path / 'served')
    with serving(tmp_path / 'served') as server:
        download_checkpoint(server.url(NAME), model_dir=str(tmp_path / 'a'))  # stderr: no tty
        assert capsys.readouterr().err == ''
        download_checkpoint(server.url(NAME), model_dir=str(tmp_path / 'b'), progress=True)
        assert 'elapsed' in capsys.readouterr().err


TORCHRUN_SCRIPT = '''
import sys
import torch
import torch.distributed as dist
import mmmv
from mmmv.models import MambaVision
dist.init_process_group('gloo')  # the rendezvous torchrun's environment describes
url, local = sys.argv[1], sys.argv[2]
arch = dict(dim=16, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4))
model = MambaVision(arch=arch, init_cfg=dict(type='Pretrained', checkpoint=url))
model.init_weights()
expected = torch.load(local, weights_only=False)['state_dict']
for key, value in model.state_dict().items():
    if not key.startswith('outnorm'):
        assert torch.equal(value, expected[key]), key
print(f'rank {dist.get_rank()} ok')
dist.destroy_process_group()
'''


@pytest.mark.slow
def test_torchrun_downloads_once(tmp_path, torch_home):
    local = _imagenet_checkpoint(tmp_path / 'served')
    script = tmp_path / 'load.py'
    script.write_text(TORCHRUN_SCRIPT)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'TORCH_HOME': str(torch_home)}
    with serving(tmp_path / 'served') as server:
        proc = subprocess.run(
            [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
             '--master_addr', '127.0.0.1', '--master_port', str(port), str(script),
             server.url(NAME), str(local)],
            env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert 'rank 0 ok' in proc.stdout and 'rank 1 ok' in proc.stdout
        assert server.requests == ['/' + NAME]


@pytest.mark.slow
def test_tools_test_evaluates_a_checkpoint_by_url(tmp_path, torch_home):
    """tools/test.py CONFIG URL: the tiny demo segmentor's checkpoint served by URL."""
    import importlib.util

    import _reliability_helpers as helpers
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    spec = importlib.util.spec_from_file_location(
        'make_demo_data', osp.join(helpers.ROOT, 'tools', 'make_demo_data.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_demo_data(str(tmp_path / 'data' / 'demo'), num_train=2, num_val=2, size=64,
                          verbose=False)
    config = helpers.write_tiny_config(tmp_path, 'seg')
    init_default_scope('mmseg')
    model = MODELS.build(Config.fromfile(config).model)
    (tmp_path / 'served').mkdir()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, tmp_path / 'served' / 'seg.pth')
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'TORCH_HOME': str(torch_home),
           'PYTHONPATH': os.pathsep.join([osp.dirname(osp.abspath(__file__)),
                                          os.environ.get('PYTHONPATH', '')])}
    with serving(tmp_path / 'served') as server:
        proc = subprocess.run(
            [sys.executable, osp.join(helpers.ROOT, 'tools', 'test.py'), config,
             server.url('seg.pth'), '--work-dir', str(tmp_path / 'work')],
            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert server.requests == ['/seg.pth']  # the tool reads it twice, downloads it once
    assert (tmp_path / 'work' / 'metrics.json').exists()
    assert (torch_home / 'hub' / 'checkpoints' / 'seg.pth').exists()
