
class Suspend:
    def __init__(self, value):
        self.value = value
    def __await__(self):
        got = yield self.value
        return got
async def helper(x):
    return await Suspend(x)
async def target(a):
    b = await helper(a)
    try:
        c = await Suspend(b + 1)
    except ZeroDivisionError:
        c = 'zde'
    if c == 'bad':
        raise RuntimeError(c)
    return (a, b, c)
