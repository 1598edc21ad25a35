# Русские тексты бота: те же id и те же переменные, что в en/bot.ftl.

## Главное меню (nodes/start.py)
start-greeting-first = Привет, { $username }! Проголодались?
start-greeting-again = Снова главное меню! Проголодались?
start-yes = Не волнуйтесь, я о вас позабочусь!
start-no = Тогда напишите мне, когда будете готовы!
start-unknown = Что-что?

## Заказ (nodes/hungry.py)
hungry-ask = Что будете заказывать? Корзина: { $cart }
hungry-cart-empty = пусто
hungry-finish-empty = Корзина пуста! Напишите «{ button-cancel }», чтобы отменить заказ
hungry-ordering = Заказываю: { $cart }
hungry-cancelled = Заказ отменён!
hungry-name-too-long = Слишком длинное название! В названии блюда не больше { $limit ->
        [one] { $limit } символа
       *[other] { $limit } символов
    }: напишите короче, пожалуйста.
hungry-cart-full = Корзина полна ({ $limit ->
        [one] { $limit } блюдо
        [few] { $limit } блюда
       *[many] { $limit } блюд
    }). Напишите «{ button-finish }», чтобы заказать, или «{ button-cancel }», чтобы начать заново.
hungry-added = Добавлено: { $dish }
hungry-expired = Ваша корзина устарела и очищена.
hungry-reminder = Всё ещё голодны? Ваша корзина: { $cart }
hungry-cart-newest = { $count ->
        [one] { $count } блюдо
        [few] { $count } блюда
       *[many] { $count } блюд
    }, последние { $shown }: …, { $items }
hungry-order-failed = Ошибка
hungry-ordered = Заказано!

## Кнопки: набранное слово работает как кнопка
button-yes = Да
button-no = Нет
button-finish = Заказать
button-cancel = Отмена

## На любом шаге
not-text = Я понимаю только текстовые сообщения.
stale-press = Это меню устарело.
state-unavailable = Извините, я сейчас не могу добраться до своей памяти. Попробуйте ещё раз чуть позже.
user-busy = Я ещё обрабатываю ваши прошлые сообщения. Отправьте это ещё раз чуть позже.
transition-lost = Извините, я не смог сохранить этот шаг, так что мы там же, где были. Отправьте его ещё раз.
state-too-large = Извините, так наш разговор станет слишком большим, чтобы я его запомнил, так что мы там же, где были. Сначала закончите или отмените то, что мы делаем.

## /language
language-name = Русский
language-menu = Выберите язык:
language-chosen = Теперь я говорю с вами по-русски.
