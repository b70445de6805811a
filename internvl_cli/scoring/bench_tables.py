"""Tables in an OCR answer as olmOCR-bench reads them: Markdown pipe tables and HTML tables, as cell grids with
neighbours (up, down, left, right) and headings, rowspan and colspan included.

Markdown: a run of at least two lines holding `|`; the first line made only of `-`, `:` and spaces (pipes aside)
is the separator, lines made only of those characters and pipes are skipped; cells are split on `|`, the empty
ones at either end dropped; the first row and the first column are headings. HTML: every `<table>` (nested ones
too), every `<tr>` inside it, the `<th>`/`<td>` children of each row; `<th>` cells and cells under `<thead>` are
headings; `<br>` becomes a newline. A neighbour is the nearest other cell in that direction along the cell's
span (empty grid places are passed over); a heading is found by walking up (or left) until heading cells are
met, or the edge when none are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

Cell = tuple[int, int]
_DIRECTIONS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}


@dataclass
class Grid:
    """Cells keyed by their top-left place, with the places each covers and the heading cells."""

    text: dict[Cell, str] = field(default_factory=dict)
    spans: dict[Cell, tuple[int, int]] = field(default_factory=dict)
    headings: set[Cell] = field(default_factory=set)
    places: dict[Cell, Cell] = field(default_factory=dict)

    def add_row(self, row: int, cells: list[tuple[str, int, int, bool]]) -> None:
        column = 0
        for text, rowspan, colspan, heading in cells:
            while (row, column) in self.places:
                column += 1
            cell = (row, column)
            self.text[cell] = text
            self.spans[cell] = (rowspan, colspan)
            if heading:
                self.headings.add(cell)
            for r in range(row, row + rowspan):
                for c in range(column, column + colspan):
                    self.places[(r, c)] = cell
            column += colspan

    def neighbours(self, cell: Cell, direction: str) -> set[Cell]:
        """The nearest other cell in `direction` along each row (or column) the cell spans."""
        rowspan, colspan = self.spans[cell]
        height = 1 + max(r for r, _ in self.places)
        width = 1 + max(c for _, c in self.places)
        dr, dc = _DIRECTIONS[direction]
        if dr:
            lanes = [(cell[0] + (rowspan - 1 if dr > 0 else 0), c) for c in range(cell[1], cell[1] + colspan)]
        else:
            lanes = [(r, cell[1] + (colspan - 1 if dc > 0 else 0)) for r in range(cell[0], cell[0] + rowspan)]
        found = set()
        for r, c in lanes:
            r, c = r + dr, c + dc
            while 0 <= r < height and 0 <= c < width:
                other = self.places.get((r, c))
                if other is not None and other != cell:
                    found.add(other)
                    break
                r, c = r + dr, c + dc
        return found

    def heading_cells(self, cell: Cell, direction: str) -> set[Cell]:
        """Heading cells met walking from `cell` in `direction` ("up" or "left"); the edge cells when none."""
        headings, ends, seen, todo = set(), set(), set(), {cell}
        while todo:
            current = todo.pop()
            seen.add(current)
            if current in self.headings:
                headings.add(current)
            following = self.neighbours(current, direction)
            if following:
                todo |= following - seen
            else:
                ends.add(current)
        return (headings - {cell}) or (ends - {cell})


def markdown_tables(content: str) -> list[Grid]:
    tables, run = [], []
    for line in content.strip().split("\n") + [""]:
        if "|" in line:
            run.append(line)
            continue
        if len(run) >= 2:
            grid = _markdown_grid(run)
            if grid is not None:
                tables.append(grid)
        run = []
    return tables


def _markdown_grid(lines: list[str]) -> Grid | None:
    separator = next((i for i, line in enumerate(lines)
                      if line.replace("|", "").strip() and set(line.replace("|", "").strip()) <= set("- :")), None)
    rows = []
    for i, line in enumerate(lines):
        if i == separator or (line.strip() and set(line) <= set("- :|")):
            continue
        cells = [cell.strip() for cell in line.split("|")]
        if cells and cells[0] == "":
            cells = cells[1:]
        if cells and cells[-1] == "":
            cells = cells[:-1]
        if cells:
            rows.append(cells)
    grid = Grid()
    for r, cells in enumerate(rows):
        grid.add_row(r, [(text, 1, 1, r == 0 or c == 0) for c, text in enumerate(cells)])
    return grid if grid.text else None


class _Node:
    def __init__(self, tag: str, attrs: dict, parent: _Node | None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self) -> str:
        return "".join(child if isinstance(child, str) else ("\n" if child.tag == "br" else child.text())
                       for child in self.children)

    def descendants(self, tags: tuple[str, ...]):
        for child in self.children:
            if isinstance(child, _Node):
                if child.tag in tags:
                    yield child
                yield from child.descendants(tags)

    def inside(self, tag: str) -> bool:
        node = self.parent
        while node is not None:
            if node.tag == tag:
                return True
            node = node.parent
        return False


_VOID = {"br", "img", "hr", "meta", "link", "input", "col", "wbr", "area", "base", "source"}


class _TreeBuilder(HTMLParser):
    """A lenient element tree: an end tag closes the nearest open element of its name, or is ignored."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = _Node("#root", {}, None)
        self.open = [self.root]

    def handle_starttag(self, tag, attrs):
        node = _Node(tag, dict(attrs), self.open[-1])
        self.open[-1].children.append(node)
        if tag not in _VOID:
            self.open.append(node)

    def handle_startendtag(self, tag, attrs):
        self.open[-1].children.append(_Node(tag, dict(attrs), self.open[-1]))

    def handle_endtag(self, tag):
        for i in range(len(self.open) - 1, 0, -1):
            if self.open[i].tag == tag:
                del self.open[i:]
                return

    def handle_data(self, data):
        self.open[-1].children.append(data)


def _span(value: str | None) -> int:
    try:
        number = int(value) if value not in (None, "") else 1
    except (TypeError, ValueError):
        return 1
    return number if number > 0 else 1


def html_tables(content: str) -> list[Grid]:
    if "<table" not in content.lower():
        return []
    builder = _TreeBuilder()
    builder.feed(content)
    builder.close()
    tables = []
    for table in builder.root.descendants(("table",)):
        rows = list(table.descendants(("tr",)))
        grid = Grid()
        for r, row in enumerate(rows):
            cells = []
            for cell in (c for c in row.children if isinstance(c, _Node) and c.tag in ("th", "td")):
                rowspan = _span(cell.attrs.get("rowspan"))
                if str(cell.attrs.get("rowspan", "")).strip() == "0":  # to the end of the table
                    rowspan = max(1, len(rows) - r)
                cells.append((cell.text().strip(), rowspan, _span(cell.attrs.get("colspan")),
                              cell.tag == "th" or row.inside("thead")))
            grid.add_row(r, cells)
        if grid.text:
            tables.append(grid)
    return tables
