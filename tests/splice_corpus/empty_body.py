def target():
    pass
