import subprocess
import sys


def test_import_is_light():
    """``import longshort`` (and its graph and agents API) must not pull in torch or transformers."""
    code = (
        "import sys, longshort\n"
        "from longshort import build_reasoner, Episode, long_agent\n"
        "from longshort.agents import ScriptedBackend\n"
        "heavy = [m for m in ('torch', 'transformers', 'vllm') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
