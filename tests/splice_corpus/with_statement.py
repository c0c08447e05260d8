class CM:
    def __init__(self, log, swallow):
        self.log, self.swallow = log, swallow
    def __enter__(self):
        self.log.append('enter')
        return self
    def __exit__(self, *exc):
        self.log.append(('exit', exc[0] and exc[0].__name__))
        return self.swallow
def target(x, swallow=False):
    log = []
    with CM(log, swallow) as c, CM(log, False):
        if x == 0:
            return log
        if x < 0:
            raise KeyError(x)
        log.append(x)
    return log
