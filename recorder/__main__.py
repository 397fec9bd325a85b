from recorder.cli import main

if __name__ == "__main__":  # not when a worker process of `rebuild --jobs` imports it again
    main()
