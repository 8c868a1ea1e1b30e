#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the Python 3.12 wheels that benchmarks/accelerator.sh
# installs on a GPU machine without network access: the project's dependencies that its
# image lacks, and theirs.
#
#     bash benchmarks/accelerator_wheels.sh [DIR]    # default DIR: .whl
#
# The machine (one H200, Python 3.12, jax 0.11.2 with the CUDA plugin) already holds
# numpy, jax, flax, optax, orbax-checkpoint, chex, absl-py, etils, protobuf, psutil,
# pyarrow, requests, tqdm, wrapt, cloudpickle, lineax, equinox, pyyaml, pandas, scipy,
# scikit-learn, matplotlib, pillow, fsspec, zipp and typing-extensions. Missing there, and
# so carried, with the versions this project is tested with:
#   the project's own:  ott-jax ml-collections tensorflow-datasets grain mlxtend
#                       tensorboardX importlib_resources
#   tensorflow-datasets: array-record dm-tree immutabledict promise simple-parsing
#                       tensorflow-metadata termcolor toml (simple-parsing: docstring-parser;
#                       tensorflow-metadata: googleapis-common-protos)
#   grain:              portpicker (and array-record, dm-tree above)
#   ott-jax:            jaxopt
# promise is published only as a source archive: its pure-Python wheel is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
mkdir -p "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" \
  ott-jax==0.6.0 ml-collections==1.1.0 tensorflow-datasets==4.9.10 grain==0.2.18 \
  mlxtend==0.25.0 tensorboardX==2.6.5 importlib_resources==7.1.0 \
  array-record==0.8.6 dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9 \
  docstring-parser==0.18.0 tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 \
  termcolor==3.3.0 toml==0.10.2 portpicker==1.6.0 jaxopt==0.8.5
python3 -m pip wheel -q --no-deps -w "$dest" promise==2.3
ls "$dest"
du -sh "$dest"
