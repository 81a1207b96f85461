"""Load VLMEvalKit's own functions/methods from its source (outside the g2u repo), stubbing heavy imports:
each needed def is cut out of the reference file with ast and exec'd in a namespace with pandas etc."""

import ast
import copy as cp
import math
import os
import re
import string

import numpy as np
import pandas as pd


def defs(path, names, ns, cls=None, base=None):
    src = open(path).read()
    tree = ast.parse(src)
    nodes = tree.body
    if cls:
        node = next(n for n in nodes if isinstance(n, ast.ClassDef) and n.name == cls)
        nodes = node.body
    out = []
    for n in nodes:
        if isinstance(n, (ast.FunctionDef, ast.Assign)) and (
            getattr(n, "name", None) in names
            or (isinstance(n, ast.Assign) and any(getattr(t, "id", None) in names for t in n.targets))
        ):
            out.append(ast.get_source_segment(src, n, padded=True))
    assert len(out) == len(names), (path, names, len(out))
    if cls:
        body = "\n".join("    " + line for s in out for line in s.splitlines())
        code = f"class {cls}({base or 'object'}):\n{body}\n"
    else:
        code = "\n\n".join(out)
    exec(compile(code, path, "exec"), ns)
    return ns


def base_ns():
    return dict(
        pd=pd,
        np=np,
        string=string,
        re=re,
        cp=cp,
        os=os,
        math=math,
        osp=os.path,
        toliststr=lambda s: [s] if isinstance(s, str) else list(s),
        logger=type("L", (), {"info": staticmethod(print), "warning": staticmethod(print)})(),
    )
