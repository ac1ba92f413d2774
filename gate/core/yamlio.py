"""The one YAML loader for suites and policies: bounded reads, safe YAML,
line numbers for every key and item, duplicate keys refused, merge keys
supported, alias expansion capped (docs/suite-format.md, "Limits"), and
floats in YAML 1.2 form (`1e-4`) read as floats."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gate.core.errors import BadInput
from gate.core.fsutil import NotRegularFile, TooLarge, read_regular

__all__ = ["load_yaml", "SUITE_SIZE_LIMIT", "PROMPTS_FILE_SIZE_LIMIT", "YAML_ALIAS_LIMIT", "mib", "cannot_read"]

# Bounded reads (docs/suite-format.md, "Limits"): a suite or policy is read
# whole, a prompts file line by line; neither may grow without bound.
SUITE_SIZE_LIMIT = 4 * 1024 * 1024            # suites and --policy files
PROMPTS_FILE_SIZE_LIMIT = 64 * 1024 * 1024    # prompts_file
# Nodes that aliases may add to one YAML document. Anchors and aliases
# (`<<: *base`) share a few settings; a "billion laughs" document expands
# small anchors exponentially and is refused at the alias that crosses this.
YAML_ALIAS_LIMIT = 100_000


def mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def cannot_read(exc: OSError | ValueError) -> str:
    return f"cannot be read ({exc.strerror})" if isinstance(exc, OSError) else "is not a valid path"  # NUL in it


class _Mapping(dict):
    lines: dict[Any, int]


class _List(list):
    lines: list[int]


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _AliasLimit(yaml.MarkedYAMLError):
    """An alias that expands the document past YAML_ALIAS_LIMIT nodes."""

    hint = "write the values out, or share fewer and smaller anchors"


class _RecursiveAlias(_AliasLimit):
    """An alias inside its own anchor: it would expand forever."""

    hint = "point the alias at an anchor outside the node it sits in"


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and list item,
    refuses duplicate keys, supports merge keys (`<<: *base`) and caps how
    far aliases may expand the document."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._expanded = 0                  # nodes the aliases so far stand for
        self._sizes: dict[int, int] = {}    # id(node) -> nodes in its expansion, capped at the limit + 1
        self._own_keys: dict[int, list[Any]] = {}

    # ---- composition: count what each alias stands for, before anything is built
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                self._expanded += self._expansion(target, event)
                if self._expanded > YAML_ALIAS_LIMIT:
                    raise _AliasLimit(None, None, f"aliases expand the document to more than {YAML_ALIAS_LIMIT:,} "
                                                  f"nodes (at *{event.anchor})", event.start_mark)
        return super().compose_node(parent, index)

    def _expansion(self, root: Any, alias: Any) -> int:
        """Nodes in `root` with every alias inside it written out: iterative
        and memoised, so an exponential expansion costs one visit per node."""
        cap = YAML_ALIAS_LIMIT + 1
        stack = [root]
        while stack:
            node = stack[-1]
            if id(node) in self._sizes:
                stack.pop()
                continue
            if isinstance(node, yaml.ScalarNode):
                self._sizes[id(node)] = 1
                stack.pop()
                continue
            if node.end_mark is None:  # still being composed: the alias sits inside its own anchor
                raise _RecursiveAlias(None, None, f"alias *{alias.anchor} refers to a node that contains it",
                                      alias.start_mark)
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
            pending = [c for c in children if id(c) not in self._sizes]
            if pending:
                stack.extend(pending)
                continue
            self._sizes[id(node)] = min(cap, 1 + sum(self._sizes[id(c)] for c in children))
            stack.pop()
        return self._sizes[id(root)]

    # ---- construction
    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as exc:  # int() of 5,000 digits, a 13th month: a value, not a crash
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value ({str(exc).split(';')[0]})", node.start_mark) from None

    def flatten_mapping(self, node: Any) -> None:
        # Remember the keys written in the mapping itself before merged keys join them.
        self._own_keys.setdefault(id(node), [k for k, _ in node.value if k.tag != _MERGE_TAG])
        super().flatten_mapping(node)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:  # type: ignore[override]
        if not isinstance(node, yaml.MappingNode):
            return super().construct_mapping(node, deep=True)  # raises its own marked error
        # `<<: *base`: merged keys come first, the mapping's own keys override them.
        self.flatten_mapping(node)
        seen: dict[Any, int] = {}
        for key_node in self._own_keys[id(node)]:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key]})", key_node.start_mark)
            if isinstance(key, (str, int)):
                seen[key] = key_node.start_mark.line + 1
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:  # a merged key keeps the line where its anchor wrote it
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int)):
                lines[key] = key_node.start_mark.line + 1
        m = _Mapping(super().construct_mapping(node, deep=True))
        m.lines = lines
        return m

    def construct_sequence(self, node, deep=False):  # type: ignore[override]
        s = _List(super().construct_sequence(node, deep=True))
        s.lines = [child.start_mark.line + 1 for child in node.value]
        return s


# Messages say "got list", never "got _List".
_Mapping.__name__ = _Mapping.__qualname__ = "dict"
_List.__name__ = _List.__qualname__ = "list"

_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _LineLoader.construct_sequence)

# Floats as YAML 1.2 (and every other YAML user) writes them. PyYAML follows
# YAML 1.1, whose floats need a dot and a signed exponent, so `atol: 1e-4`
# would arrive as the string '1e-4'. Only exponent forms are added: anything
# YAML 1.1 already reads (ints, `1.5`, `.inf`) resolves as before, and a
# quoted '1e-4' stays a string. add_implicit_resolver copies SafeLoader's
# table before it appends, so yaml.safe_load elsewhere is unchanged.
_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")
_LineLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def load_yaml(path: Path) -> Any:
    """A suite or policy file: a regular file of at most SUITE_SIZE_LIMIT
    bytes, UTF-8, safe YAML with line numbers."""
    path = Path(path)
    try:
        data = read_regular(path, SUITE_SIZE_LIMIT)
    except FileNotFoundError:
        raise BadInput(f"{path}: file not found", "check the path (relative paths resolve against the cwd)") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a folder, not a YAML file", "pass the suite/policy file itself") from None
    except NotRegularFile as exc:
        raise BadInput(f"{path}: {exc}", "pass the suite/policy file itself, saved as a file") from None
    except TooLarge as exc:
        raise BadInput(f"{path}: {exc} for a suite or policy file",
                       f"move long prompt lists into a prompts_file (limit {mib(PROMPTS_FILE_SIZE_LIMIT)})") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: {cannot_read(exc)}", "check the file's permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text", "save the file as UTF-8") from None
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except _AliasLimit as exc:
        raise BadInput(f"{path}:{exc.problem_mark.line + 1}: {exc.problem}", exc.hint) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise BadInput(f"{path}{line}: malformed YAML: {exc.problem or exc.context}",
                       "fix the YAML syntax at that line") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: malformed YAML: {exc}", "fix the YAML syntax") from None
    except RecursionError:
        raise BadInput(f"{path}: YAML nested too deeply to read", "flatten the nesting") from None
