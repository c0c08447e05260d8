def target():
    while True: x = yield; y = x.upper()
