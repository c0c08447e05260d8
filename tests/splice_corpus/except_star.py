def target(n):
    caught = []
    try:
        raise ExceptionGroup('g', [ValueError(n), KeyError(n), TypeError(n)][:n])
    except* ValueError as eg:
        caught.append(('v', len(eg.exceptions)))
    except* KeyError:
        caught.append('k')
    return caught
