"""vitpe's version, the one place it is written: pyproject.toml reads it for
the distribution (vitpe-ext), vitpe_ext.__version__ and `vitpe --version`
import it."""
__version__ = "0.1.0"
