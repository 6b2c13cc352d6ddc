"""A couple of rows of each dataset schema, as a person would upload them."""

from __future__ import annotations

from workers.spec import DatasetSchema

INSTRUCTION_ROWS = [
    {"instruction": "Say hi", "input": "", "output": "hi"},
    {"instruction": "Add", "input": "1 2", "output": "3"},
]
ROWS_BY_SCHEMA = {
    DatasetSchema.TEXT: [{"text": "The sky is blue."}, {"text": "Water is wet."}],
    DatasetSchema.INSTRUCTION: INSTRUCTION_ROWS,
    DatasetSchema.CHAT: [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
            ]
        },
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
    ],  # fmt: skip
    DatasetSchema.PREFERENCE: [
        {"prompt": "Greet me", "chosen": "Hello!", "rejected": "No."},
        {"prompt": "Count to 2", "chosen": "1 2", "rejected": "3"},
    ],
    DatasetSchema.MULTIPLE_CHOICE: [
        {"question": "2+2?", "choices": ["3", "4", "5"], "answer": 1},
        {"question": "Sky colour?", "choices": ["blue", "green"], "answer": 0},
    ],
}
