"""mmmv: MambaVision backbones for OpenMMLab (mmdet 3.x, mmsegmentation 1.x).

The CPU kernels (selective scan, attention, RoIAlign) are small C++ extensions built with PyTorch's own
tooling; they need torch at build time (`pip install --no-build-isolation -e .`, as `make install`
does). Without a compiler or torch at build time the package still installs and uses its
pure-PyTorch scan and PyTorch's attention.
"""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join('mmmv', 'ops', 'csrc')
EXTENSIONS = {'mmmv.ops._scan_cpu': 'selective_scan_cpu.cpp',
              'mmmv.ops._attention_cpu': 'attention_cpu.cpp',
              'mmmv.ops._roi_align_cpu': 'roi_align_cpu.cpp'}


def read_requirements(name):
    with open(os.path.join(HERE, 'requirements', name)) as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


def extension_kwargs():
    """ext_modules / cmdclass for the CPU kernels, or nothing when they cannot be built."""
    sources = {name: os.path.join(CSRC, source) for name, source in EXTENSIONS.items()}
    if os.environ.get('MMMV_NO_EXT') == '1' or not all(
            os.path.exists(os.path.join(HERE, path)) for path in sources.values()):
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return {}
    flags = ['-O3', '-std=c++20', '-fopenmp', '-fno-trapping-math', '-ffp-contract=fast']
    headers = [os.path.join(CSRC, h) for h in ('cpu_math.h', 'attention_tile.h')]
    exts = [CppExtension(name, [path], extra_compile_args=flags, extra_link_args=['-fopenmp'],
                         depends=headers)
            for name, path in sources.items()]
    build_ext = BuildExtension.with_options(use_ninja=True)
    return dict(ext_modules=exts, cmdclass={'build_ext': build_ext})


setup(
    name='mmmv',
    version='0.1.0',
    description='MambaVision backbones for mmdetection and mmsegmentation',
    long_description=open(os.path.join(HERE, 'README.md')).read() if os.path.exists(
        os.path.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['mmmv', 'mmmv.*']),
    package_data={'mmmv.ops': ['csrc/*.cpp', 'csrc/*.h']},
    install_requires=read_requirements('runtime.txt'),
    extras_require={
        'cuda': read_requirements('cuda.txt'),
        'tests': read_requirements('tests.txt'),
        'deploy': read_requirements('deploy.txt'),
    },
    zip_safe=False,
    **extension_kwargs(),
)
