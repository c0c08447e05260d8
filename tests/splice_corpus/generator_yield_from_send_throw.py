def sub(tag):
    got = yield tag
    try:
        got2 = yield got
    except KeyError as e:
        got2 = 'caught %s' % e
    return got2
def target(tag):
    r = yield from sub(tag)
    total = 0
    while True:
        try:
            v = yield r
        except ValueError:
            return ('stopped', total)
        if v is None:
            break
        total += v
    return total
