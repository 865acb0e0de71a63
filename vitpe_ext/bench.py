"""vitpe_ext.bench is vitpe_ext.command.bench: the name scripts import it by, and
`python -m vitpe_ext.bench` runs it (as does `vitpe bench`)."""
import sys

from .command import bench as _real

if __name__ == "__main__":
    sys.exit(_real.main())
sys.modules[__name__] = _real
