"""`edge chat`: the Textual chat app over `edge.Agent`.

    app.py          EdgeChatApp and `run(config)`: start-up, help, theme, quitting
    service.py      ChatService: the only code that touches the agent and the bank
    startup.py      the loading screen (progress) and the start-up error screen
    chat_screen.py  the main screen: turns widget messages into service calls in workers
    conversation.py the messages and the streamed reply, and the message box
    memory_panel.py memories, search, and the operations each turn applied
    status_bar.py   model, speed, bank size
    dialogs.py      help (key bindings) and the memory editor
    workers.py      helpers for worker threads
    edge.tcss       the stylesheet (theme variables only: dark and light)
"""
