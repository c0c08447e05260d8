
class Suspend:
    def __init__(self, value):
        self.value = value
    def __await__(self):
        got = yield self.value
        return got
async def target(n):
    for i in range(n):
        x = await Suspend(i)
        try:
            yield x
        except KeyError:
            yield 'k'
