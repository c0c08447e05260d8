class Point:
    __match_args__ = ('x', 'y')
    def __init__(self, x, y):
        self.x, self.y = x, y
def target(v):
    match v:
        case 0:
            return 'zero'
        case [a, b, *rest]:
            return ('seq', a, b, rest)
        case {'k': x, **kw}:
            return ('map', x, kw)
        case str() as s if len(s) > 2:
            return 'long str'
        case Point(0, y=yy):
            return ('point', yy)
        case _:
            pass
