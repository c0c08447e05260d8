def target(xs):
    a = [x * 2 for x in xs if x]
    b = {x: y for x, y in zip(xs, a)}
    c = sum(x for x in xs)
    return a, b, c
