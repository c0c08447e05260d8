def target(x):
    log = []
    try:
        try:
            r = 10 // x
        except ZeroDivisionError as e:
            log.append('zde')
            return log
        else:
            log.append('else')
        finally:
            log.append('finally')
        if x < 0:
            raise ValueError(x)
        return r, log
    except ValueError:
        log.append('ve')
        raise
    finally:
        log.append('outer')
