"""mmmv: MambaVision backbones for OpenMMLab (mmdet 3.x, mmsegmentation 1.x).

The CPU selective-scan kernel is a small C++ extension built with PyTorch's own tooling; it needs
torch at build time (`pip install --no-build-isolation -e .`, as `make install` does). Without a
compiler or torch at build time the package still installs and uses its pure-PyTorch scan.
"""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
SCAN_SOURCE = os.path.join('mmmv', 'ops', 'csrc', 'selective_scan_cpu.cpp')


def read_requirements(name):
    with open(os.path.join(HERE, 'requirements', name)) as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


def extension_kwargs():
    """ext_modules / cmdclass for the CPU scan kernel, or nothing when it cannot be built."""
    if os.environ.get('MMMV_NO_EXT') == '1' or not os.path.exists(os.path.join(HERE, SCAN_SOURCE)):
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return {}
    ext = CppExtension(
        'mmmv.ops._scan_cpu', [SCAN_SOURCE],
        extra_compile_args=['-O3', '-std=c++20', '-fopenmp', '-fno-trapping-math', '-ffp-contract=fast'],
        extra_link_args=['-fopenmp'])
    return dict(ext_modules=[ext], cmdclass={'build_ext': BuildExtension.with_options(use_ninja=True)})


setup(
    name='mmmv',
    version='0.1.0',
    description='MambaVision backbones for mmdetection and mmsegmentation',
    long_description=open(os.path.join(HERE, 'README.md')).read() if os.path.exists(
        os.path.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['mmmv', 'mmmv.*']),
    package_data={'mmmv.ops': ['csrc/*.cpp']},
    install_requires=read_requirements('runtime.txt'),
    extras_require={
        'cuda': read_requirements('cuda.txt'),
        'tests': read_requirements('tests.txt'),
    },
    zip_safe=False,
    **extension_kwargs(),
)
