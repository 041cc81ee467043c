"""dmole_lab: continual multimodal instruction tuning with LoRA experts, and what happens inside.

Light imports only here, so that torch-free parts (config, metrics, store, plots) load fast;
import submodules directly (``from dmole_lab import metrics``).
"""

__version__ = "0.1.0"
