"""The house rules of the code layout: layers import only downwards, nothing edits sys.path, no
library module imports a script, no folder a script runs from shadows an installed library, and the
onnxruntime-only scripts load without PyTorch."""
import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from conftest import REPO_DIR

# zipformer/'s subpackages, lowest first: each may import only itself and those before it.
LAYERS = ("core", "loss", "model", "checkpoints", "data", "training", "decoding", "deploy", "tuners")
SOURCE_DIRS = ("zipformer", "zipformer_adapter", "zipformer_lora", "local")


def python_files(*dirs: str) -> List[Path]:
    return sorted(p for d in dirs for p in (REPO_DIR / d).rglob("*.py") if "exp" not in p.parts)


def imported_modules(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, dotted module) of every import in `path`, `from a.b import c` giving both a.b and a.b.c."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def test_every_layer_imports_only_the_layers_below_it():
    assert sorted(p.name for p in (REPO_DIR / "zipformer").iterdir() if (p / "__init__.py").is_file()) == sorted(LAYERS)
    upward = []
    for path in python_files("zipformer"):
        relative = path.relative_to(REPO_DIR / "zipformer")
        if len(relative.parts) < 2:
            continue  # the scripts sit above every layer
        own = LAYERS.index(relative.parts[0])
        for line, module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "zipformer" and len(parts) > 1 and parts[1] in LAYERS and LAYERS.index(parts[1]) > own:
                upward.append(f"{path.relative_to(REPO_DIR)}:{line} imports {module}")
    assert not upward, "\n".join(upward)


def test_no_source_file_edits_sys_path():
    offenders = [
        str(path.relative_to(REPO_DIR))
        for path in python_files(*SOURCE_DIRS, "tests")
        if path != Path(__file__).resolve() and "sys.path" in path.read_text()
    ]
    assert not offenders


def scripts() -> List[Path]:
    """The files run as ./folder/script.py (those with a shebang)."""
    return [p for p in python_files(*SOURCE_DIRS) if p.read_text().startswith("#!")]


def test_no_module_imports_a_script():
    script_modules = {".".join(p.relative_to(REPO_DIR).with_suffix("").parts) for p in scripts()}
    found = [
        f"{path.relative_to(REPO_DIR)}:{line} imports {module}"
        for path in python_files(*SOURCE_DIRS)
        for line, module in imported_modules(path)
        if module in script_modules
    ]
    assert not found, "\n".join(found)


def test_the_library_imports_no_recipe_directory():
    """zipformer/ knows no tuner by name: zipformer_adapter/, zipformer_lora/ and local/ build on it."""
    found = [
        f"{path.relative_to(REPO_DIR)}:{line} imports {module}"
        for path in python_files("zipformer")
        for line, module in imported_modules(path)
        if module.split(".")[0] in ("zipformer_adapter", "zipformer_lora", "local")
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("folder", sorted({p.parent for p in scripts()}), ids=lambda p: str(p.relative_to(REPO_DIR)))
def test_no_name_in_a_script_folder_shadows_an_importable_module(folder: Path, tmp_path: Path):
    """A script puts its folder first on sys.path: a module or package there named like an importable
    one (a library, or this project's own packages) would replace it for that script."""
    names = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    names = sorted(name for name in names if name.isidentifier() and name != "__init__")
    # Asked from an empty folder, so that only installed modules answer; a bare folder on the path
    # (a namespace package, origin None) holds no module to shadow.
    code = (
        "import importlib.util\n"
        f"print([n for n in {names!r} if (s := importlib.util.find_spec(n)) is not None and s.origin is not None])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"{folder.relative_to(REPO_DIR)}: {result.stdout.strip()} would be shadowed"


def test_the_onnxruntime_scripts_load_without_pytorch():
    modules = {
        module
        for script in ("zipformer/onnx_pretrained.py", "zipformer/onnx_pretrained-streaming.py")
        for _, module in imported_modules(REPO_DIR / script)
        if module.startswith("zipformer.") and _is_module(module)
    }
    modules = sorted(modules)
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", modules


def _is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except ModuleNotFoundError:
        return False
